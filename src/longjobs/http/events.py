"""``GET /v1/jobs/{id}/events``: a job's event log as Server-Sent Events, or as a JSON list.

Streams read only from the store, so a slow or vanished client never slows a worker, and a
disconnect never cancels the job: it only stops this reader. Each connection holds at most one
page of events (the backend's page size) at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Send

from longjobs.app import App
from longjobs.errors import JobNotFound, StorageError
from longjobs.http.auth import caller_of
from longjobs.http.dependencies import StateDep, TenantDep
from longjobs.http.problems import AUTHENTICATED, documented
from longjobs.http.state import APIState
from longjobs.models import Event
from longjobs.schemas import EventList

logger = logging.getLogger("longjobs.http")

router = APIRouter(responses=AUTHENTICATED)

RETRY_MILLISECONDS = 2000
"""The reconnection delay an SSE client is told to use (the ``retry:`` field)."""

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


MAX_SEQUENCE = 2**63 - 2  # what a 64-bit store can hold, less one


@router.get(
    "/v1/jobs/{job_id}/events",
    operation_id="getJobEvents",
    response_model=None,
    responses={
        200: {
            "description": "Server-Sent Events, or the stored events as JSON",
            "content": {
                "text/event-stream": {},
                "application/json": {"schema": EventList.model_json_schema()},
            },
        },
        204: {"description": "The job is finished and nothing follows the cursor"},
        **documented(404, 422, 503),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    after: Annotated[int | None, Query(ge=-1, le=MAX_SEQUENCE)] = None,
    last_event_id: Annotated[int | None, Header(ge=-1, le=MAX_SEQUENCE)] = None,
) -> Response:
    """The events after the cursor (``Last-Event-ID``, else ``?after=N``, else the whole log).

    With ``Accept: application/json``: the stored events as ``{"object": "list", "data"}``.
    Otherwise an SSE stream: ``retry:`` first, then one frame per event (``id:`` its sequence
    number, ``event:`` its type, ``data:`` its JSON), a ``: keepalive`` comment after each quiet
    ``keepalive_seconds``, ending after the terminal status event. A finished job with nothing
    after the cursor answers 204.
    """
    cursor = last_event_id if last_event_id is not None else after if after is not None else -1
    app = state.app
    if _wants_json(request.headers.get("accept", "")):
        events = await stored_events(app, job_id, after=cursor, tenant=tenant)
        listing = EventList(data=[event.to_wire() for event in events])
        return Response(listing.model_dump_json(), media_type="application/json")
    job = await app.get(job_id, tenant=tenant)
    if job.is_terminal and not await _page_after(app, job_id, cursor, tenant):
        return Response(status_code=204)
    frames = sse_stream(
        app,
        job_id,
        after=cursor,
        tenant=tenant,
        keepalive=state.keepalive_seconds,
        closing=state.closing,
    )
    return stream_response(request, state, frames)


def stream_response(
    request: Request, state: APIState, frames: AsyncGenerator[bytes, None]
) -> EventStreamResponse:
    """The SSE response sending ``frames``: it takes one of the caller's stream slots (429 when
    none is left) and holds it until the stream ends, however it ends."""
    caller = caller_of(request)
    if state.streams is not None:
        state.streams.check(caller)
    streams = state.streams

    async def held() -> AsyncIterator[bytes]:
        with streams.hold(caller) if streams is not None else contextlib.nullcontext():
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    yield frame

    return EventStreamResponse(
        held(),
        send_timeout=state.settings.stream_send_timeout,
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )


class EventStreamResponse(StreamingResponse):
    """A stream that drops a client which stops reading: when one frame cannot be handed to the
    connection within ``send_timeout`` seconds (its buffers are full), the stream ends, the
    connection is closed and the slot is freed. Memory per connection stays bounded by those
    buffers and one page of events; the job is not affected."""

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout: float, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.send_timeout = send_timeout

    async def stream_response(self, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            # asyncio.timeout, not wait_for: wait_for wraps every send in a task of its own.
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise _SlowClient from None

        try:
            await super().stream_response(bounded_send)
        except _SlowClient:
            logger.warning("dropped an event stream client that read nothing for %ss",
                           self.send_timeout)  # fmt: skip


class _SlowClient(Exception):
    """A frame could not be sent in time."""


def _wants_json(accept: str) -> bool:
    accept = accept.lower()
    return "application/json" in accept and "text/event-stream" not in accept


async def _page_after(app: App, job_id: str, after: int, tenant: str) -> list[Event]:
    # Consumed to the end, so the generator closes itself.
    return [event async for event in app.events(job_id, after=after, tenant=tenant, follow=False)]


async def stored_events(app: App, job_id: str, *, after: int, tenant: str) -> list[Event]:
    """Every stored event of the job after ``after``, page by page; raises JobNotFound."""
    events: list[Event] = []
    while page := await _page_after(app, job_id, after, tenant):
        events += page
        after = page[-1].sequence_number
    return events


def sse_frame(event: Event) -> bytes:
    """One SSE frame: ``id``, ``event`` and the event's wire JSON on one ``data`` line."""
    data = json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.sequence_number}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def sse_stream(
    app: App,
    job_id: str,
    *,
    after: int,
    tenant: str,
    keepalive: float,
    closing: asyncio.Event | None = None,
) -> AsyncGenerator[bytes, None]:
    """The SSE body: ``retry:``, the frames of the events after ``after`` followed live until the
    terminal status event, and ``: keepalive`` whenever ``keepalive`` seconds pass in silence.

    Ends quietly if the job is deleted, the store fails mid-stream or ``closing`` is set (the
    server is shutting down); the client reconnects with ``Last-Event-ID`` and loses nothing.
    """
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    events = app.events(job_id, after=after, tenant=tenant, follow=True)
    pending: asyncio.Task[Event | None] | None = None
    closed = asyncio.create_task((closing or asyncio.Event()).wait())
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next_event(events))
            done, _ = await asyncio.wait(
                {pending, closed}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if closed in done:
                return
            if not done:
                yield b": keepalive\n\n"
                continue
            event, pending = pending.result(), None
            if event is None:
                return
            yield sse_frame(event)
    except (JobNotFound, StorageError) as exc:
        logger.warning("event stream of %s ended early: %s", job_id, exc.__class__.__name__)
    finally:
        closed.cancel()
        await _stop_reading(events, pending)


async def _next_event(events: AsyncIterator[Event]) -> Event | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


async def _stop_reading(events: AsyncIterator[Event], pending: asyncio.Task[object] | None) -> None:
    # A read in flight runs inside the generator: cancelling it finishes the generator as well.
    # Otherwise the generator waits at a yield and closes at once, without a cancellation point.
    if pending is not None:
        pending.cancel()
        return
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
