"""``GET /v1/jobs/{id}/events``: a job's event log as Server-Sent Events, or as a JSON list.

Streams read only from the store, so a slow or vanished client never slows a worker, and a
disconnect never cancels the job: it only stops this reader. Each connection holds at most one
page of events (the backend's page size) at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from longjobs.app import App
from longjobs.errors import JobNotFound, StorageError
from longjobs.follow import follow_events
from longjobs.http.auth import Reauthorization, caller_of
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
    return stream_response(request, state, frames, tenant)


def stream_response(
    request: Request, state: APIState, frames: AsyncGenerator[bytes, None], tenant: str
) -> EventStreamResponse:
    """The SSE response sending ``frames`` of ``tenant``: it takes one of the caller's stream
    slots (429 when none is left) and holds it until the stream ends, however it ends. It ends
    before the next frame once the caller's key no longer names ``tenant`` (revoked, or keys
    now required of a stream opened without one), checked every ``REAUTHORIZE_SECONDS``."""
    caller = caller_of(request)
    streams = state.streams
    if streams is not None:
        streams.check(caller)
    return EventStreamResponse(
        _while_authorized(request, tenant, frames),
        send_timeout=state.settings.stream_send_timeout,
        slot=streams.hold(caller) if streams is not None else contextlib.nullcontext(),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )


async def _while_authorized(
    request: Request, tenant: str, frames: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    authorization = Reauthorization(request, tenant)
    async with contextlib.aclosing(frames):
        async for frame in frames:
            if not await authorization.holds():
                logger.info("ended an event stream whose key no longer holds")
                return
            yield frame


class EventStreamResponse(StreamingResponse):
    """A stream that drops a client which stops reading: when one frame cannot be handed to the
    connection within ``send_timeout`` seconds (its buffers are full), the stream ends, the
    connection is closed and the slot is freed. Memory per connection stays bounded by those
    buffers and one page of events; the job is not affected.

    One timer per stream checks the send in progress now and then, rather than a timeout armed
    and disarmed around every frame."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        send_timeout: float,
        slot: contextlib.AbstractContextManager[None],
        **kwargs: Any,
    ):
        super().__init__(content, **kwargs)
        self.frames = content
        self.send_timeout = send_timeout
        self.slot = slot

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        watchdog: _Watchdog | None = None
        try:
            with self.slot:
                async with contextlib.aclosing(self.frames), asyncio.timeout(None) as deadline:
                    watchdog = _Watchdog(loop, deadline, self.send_timeout)
                    try:
                        await self._send_all(send, watchdog)
                    finally:
                        watchdog.stop()
        except TimeoutError:
            if watchdog is None or not watchdog.fired:
                raise
            logger.warning("dropped an event stream client that read nothing for %ss",
                           self.send_timeout)  # fmt: skip

    async def _send_all(self, send: Send, watchdog: _Watchdog) -> None:
        clock = watchdog.loop.time
        watchdog.since = clock()
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        watchdog.since = None
        async for frame in self.frames:
            watchdog.since = clock()
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            watchdog.since = None
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Watchdog:
    """Expires ``deadline`` (cancelling the stream's send) once a send has been in progress for
    ``timeout`` seconds; checks every ``timeout`` seconds at most."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: asyncio.Timeout, timeout: float):
        self.loop = loop
        self.since: float | None = None  # when the send in progress began
        self.fired = False
        self._deadline = deadline
        self._timeout = timeout
        self._timer = loop.call_later(timeout, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        if since is not None and now - since >= self._timeout:
            self.fired = True
            self._deadline.reschedule(now)
            return
        self._timer = self.loop.call_at((since or now) + self._timeout, self._check)

    def stop(self) -> None:
        self._timer.cancel()


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
    data = pydantic_core.to_json(event.to_wire(), inf_nan_mode="null")
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.sequence_number, event.type.encode(), data)


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
    Events that come together are sent together, in one chunk.

    Ends quietly if the job is deleted, the store fails mid-stream or ``closing`` is set (the
    server is shutting down); the client reconnects with ``Last-Event-ID`` and loses nothing.
    """
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    backend = await app.open()
    batches = follow_events(backend, tenant, job_id, after=after, idle=keepalive, closing=closing)
    try:
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if not batch:
                    yield b": keepalive\n\n"
                elif len(batch) == 1:
                    yield sse_frame(batch[0])
                else:
                    yield b"".join(map(sse_frame, batch))
    except (JobNotFound, StorageError) as exc:
        logger.warning("event stream of %s ended early: %s", job_id, exc.__class__.__name__)
