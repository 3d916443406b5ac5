"""``GET /v1/events``: the tenant-wide change feed, for dashboards and other watchers.

One SSE frame per job change (``event: job``, the job resource without its input and result),
in the order the changes were committed. A job that changed several times between two reads
shows once, at its latest state: the feed says what jobs look like now, not every step (the
per-job ``/v1/jobs/{id}/events`` has every step). Each frame's ``id:`` is an opaque cursor;
reconnecting with ``Last-Event-ID`` (or ``?after=``) resumes after it with nothing lost. Without
a cursor the feed starts now: its first frame, ``event: open``, carries the cursor of now, so a
watcher can subscribe, then read ``GET /v1/jobs``, and miss no change in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from longjobs.backends.base import Backend, Change
from longjobs.errors import StorageError
from longjobs.http.dependencies import StateDep, TenantDep
from longjobs.http.events import RETRY_MILLISECONDS, stream_response
from longjobs.http.jobs import (
    KindFilter,
    StatusFilter,
    job_wire,
    root_path_of,
    split_values,
    status_value,
    wire_json,
)
from longjobs.http.problems import AUTHENTICATED, ProblemError, documented
from longjobs.models import Status

logger = logging.getLogger("longjobs.http")

router = APIRouter(responses=AUTHENTICATED)

BATCH = 200
"""Changes read from the store at a time."""
MIN_INTERVAL = 0.1
"""The least time between two reads of the store by one feed: changes that arrive closer
together are sent together (a dashboard needs no more than ten updates a second)."""


@router.get(
    "/v1/events",
    operation_id="streamTenantEvents",
    response_model=None,
    responses={
        200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}},
        **documented(422, 503),
    },
)
async def tenant_events(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    status: StatusFilter = None,
    kind: KindFilter = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """The tenant's job changes as Server-Sent Events: ``event: job`` frames whose data is the
    job (without ``input`` and ``result``), optionally only those of the given kinds and
    statuses (each repeated or comma-separated). Resume with ``Last-Event-ID`` or ``?after=``;
    without either, the feed starts now with an ``event: open`` frame. ``: keepalive`` comments
    keep a quiet feed open; it ends only when the client leaves or the server stops."""
    statuses = frozenset(status_value(value) for value in split_values(status))
    kinds = frozenset(split_values(kind))
    cursor = last_event_id or after
    backend = await state.app.open()
    if cursor is not None:
        try:
            await backend.changed_jobs(tenant, cursor, limit=1)
        except ValueError:
            where = ["header", "last-event-id"] if last_event_id else ["query", "after"]
            errors = [{"loc": where, "msg": "not a cursor of this feed", "type": "value_error"}]
            raise ProblemError("invalid-input", "invalid cursor", errors=errors) from None
    frames = _feed(
        backend,
        tenant,
        cursor,
        _Filter(statuses, kinds, root_path_of(request), state.settings.inline_result_bytes),
        keepalive=state.keepalive_seconds,
        closing=state.closing,
    )
    return stream_response(request, state, frames, tenant)


@dataclass(frozen=True, slots=True)
class _Filter:
    """Which changes a feed sends, and how their frames are written."""

    statuses: frozenset[Status]
    kinds: frozenset[str]
    root_path: str
    inline: int

    def frame(self, change: Change) -> bytes | None:
        job = change.job
        if (self.statuses and job.status not in self.statuses) or (
            self.kinds and job.kind not in self.kinds
        ):
            return None
        resource = job_wire(job, root_path=self.root_path, inline_result_bytes=self.inline)
        del resource["input"], resource["result"]
        data = wire_json(resource)
        return b"id: %s\nevent: job\ndata: %s\n\n" % (change.cursor.encode(), data)


async def _feed(
    backend: Backend,
    tenant: str,
    cursor: str | None,
    wanted: _Filter,
    *,
    keepalive: float,
    closing: asyncio.Event,
) -> AsyncGenerator[bytes, None]:
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    closed = asyncio.create_task(closing.wait())
    try:
        if cursor is None:
            _, cursor = await backend.changed_jobs(tenant, None)
            yield f"id: {cursor}\nevent: open\ndata: {{}}\n\n".encode()
        while not closing.is_set():
            with backend.watch_job(None) as watch:  # watch, then read: no change is missed
                changes, cursor = await backend.changed_jobs(tenant, cursor, limit=BATCH)
                for frame in _frames(changes, wanted):
                    yield frame
                if len(changes) == BATCH:
                    continue
                woke = asyncio.create_task(watch.wait(keepalive))
                done, _ = await asyncio.wait({woke, closed}, return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if closed in done:
                    return
                if woke.result() is None:
                    yield b": keepalive\n\n"
                    continue
            await asyncio.sleep(MIN_INTERVAL)
    except StorageError as exc:
        logger.warning("the tenant event feed ended early: %s", exc.__class__.__name__)
    finally:
        closed.cancel()


def _frames(changes: Sequence[Change], wanted: _Filter) -> list[bytes]:
    return [frame for change in changes if (frame := wanted.frame(change)) is not None]
