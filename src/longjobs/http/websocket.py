"""``GET /v1/jobs/{id}/ws``: a job's events as WebSocket text frames, and cancel from the client.

The same events as the SSE stream (``event.to_wire()`` as JSON, one per frame), replayed from
``?after=N`` (default: the whole log) and followed live; the server closes with 1000 after the
terminal status event. The client may send ``{"type": "cancel"}``; the stream goes on and shows
the cancellation. A refused handshake (401 without a valid key, 404 for another tenant's or a
missing job, 429 past the stream cap) is answered with the problem as a plain HTTP response
where the server supports it, else closed with 1008; so is a handshake on any other path (404).
A disconnect never cancels the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from longjobs.app import App
from longjobs.errors import JobNotFound, StorageError
from longjobs.http.auth import Reauthorization, caller_of, tenant_of
from longjobs.http.events import MAX_SEQUENCE
from longjobs.http.problems import ProblemError, problem_response
from longjobs.http.state import state_of

logger = logging.getLogger("longjobs.http")

router = APIRouter()


@router.websocket("/v1/jobs/{job_id}/ws")
async def job_websocket(websocket: WebSocket, job_id: str) -> None:
    state = state_of(websocket)
    app = state.app
    try:
        tenant = await tenant_of(websocket)
        after = _after(websocket.query_params.get("after"))
        await app.get(job_id, tenant=tenant)
        if state.streams is not None:
            state.streams.check(caller_of(websocket))
    except ProblemError as exc:
        return await _deny(websocket, exc)
    except JobNotFound as exc:
        return await _deny(websocket, ProblemError("job-not-found", str(exc), job_id=job_id))
    slot = state.streams.hold(caller_of(websocket)) if state.streams else contextlib.nullcontext()
    with slot:
        await websocket.accept()
        listener = asyncio.create_task(_listen(websocket, app, job_id, tenant))
        try:
            timeout = state.settings.stream_send_timeout
            await _send_events(websocket, job_id, tenant, after, timeout)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


def _after(value: str | None) -> int:
    if value is None:
        return -1
    if not value.lstrip("-").isdigit() or not -1 <= int(value) <= MAX_SEQUENCE:
        raise ProblemError("bad-request", "after must be a sequence number (an integer ≥ -1)")
    return int(value)


@router.websocket("/{path:path}")
async def unknown_websocket(websocket: WebSocket, path: str) -> None:
    """A handshake on a path no WebSocket route serves: the 404 problem an HTTP request gets,
    rather than Starlette's bare 403."""
    await _deny(websocket, ProblemError("not-found", f"no route for {websocket.url.path}"))


async def _deny(websocket: WebSocket, problem: ProblemError) -> None:
    # The same problem body and headers as over HTTP: job_id on a 404, Retry-After on a 429.
    response = problem_response(
        problem.slug, problem.detail, headers=problem.headers, **problem.extra
    )
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=problem.detail[:120])


async def _send_events(
    websocket: WebSocket, job_id: str, tenant: str, after: int, timeout: float
) -> None:
    """Send the events; a client that cannot take one within ``timeout`` seconds is dropped,
    and the socket is closed (1008) before the next event once the caller's key no longer
    holds (checked every ``REAUTHORIZE_SECONDS``, as event streams do)."""
    app = state_of(websocket).app
    authorization = Reauthorization(websocket, tenant)
    try:
        async for event in app.events(job_id, after=after, tenant=tenant, follow=True):
            if not await authorization.holds():
                await websocket.close(code=1008, reason="the API key no longer holds")
                return
            text = json.dumps(event.to_wire(), separators=(",", ":"))
            await asyncio.wait_for(websocket.send_text(text), timeout)
        await websocket.close(code=1000)
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away (RuntimeError: sending after the close)
    except TimeoutError:
        logger.warning("dropped a WebSocket client that read nothing for %ss", timeout)
    except (JobNotFound, StorageError) as exc:
        logger.warning("websocket of %s ended early: %s", job_id, type(exc).__name__)
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1011 if isinstance(exc, StorageError) else 1000)


async def _listen(websocket: WebSocket, app: App, job_id: str, tenant: str) -> None:
    """Messages from the client: ``{"type": "cancel"}`` cancels the job; anything else is
    answered with an error frame and otherwise ignored."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            text = await websocket.receive_text()
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("type") == "cancel":
                with contextlib.suppress(JobNotFound):
                    await app.cancel(job_id, tenant=tenant)
                continue
            error = {"type": "error", "message": 'unknown message: send {"type": "cancel"}'}
            await websocket.send_text(json.dumps(error))
