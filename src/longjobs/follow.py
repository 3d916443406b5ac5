"""Reading a job's event log, and following it live, on any backend.

A follower subscribes before it reads, so nothing committed after the read is missed. When the
process that committed new events hands them over (the SQLite backend does for the reports of
its own workers), the follower takes them from the subscription as they are; when it is only
told that something changed (status changes, other processes' writes), it reads the store. Either
way each event is yielded once, in order, with no gap: anything out of line is read again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator

from longjobs.backends.base import Backend
from longjobs.backends.notify import Subscription
from longjobs.errors import JobNotFound
from longjobs.models import Event, Status

POLL_SECONDS = 1.0
"""A follower reads the store at least this often, whatever it was told."""

EVENT_PAGE = 1000
LIVE_PAGE = 64
"""Once a follower has caught up, events come a few at a time: a small page lets a backend read
them without a hop to another thread (SQLite reads pages of up to 64 in place)."""

EventBatch = list[Event]

_TERMINAL_NAMES = frozenset(s.value for s in Status if s.is_terminal)


def is_terminal_event(event: Event) -> bool:
    return event.type == "status" and event.data.get("status") in _TERMINAL_NAMES


async def read_events(
    backend: Backend, tenant: str, job_id: str, *, after: int
) -> AsyncIterator[Event]:
    """The stored events after ``after``, up to the terminal status event; raises JobNotFound."""
    while True:
        events = await _page(backend, tenant, job_id, after, EVENT_PAGE, ended=False)
        for event in events or ():
            yield event
            if is_terminal_event(event):
                return
        if not events or len(events) < EVENT_PAGE:
            return
        after = events[-1].sequence_number


async def stored_text(backend: Backend, tenant: str, job_id: str) -> str:
    """The text deltas of the job's ``output`` events, joined: what its followers were sent."""
    _, text = await _text_after(backend, tenant, job_id, -1, "")
    return text


async def _text_after(
    backend: Backend, tenant: str, job_id: str, after: int, text: str
) -> tuple[int, str]:
    """``text`` and the output deltas after event ``after``; the last event's number read."""
    parts = [text]
    async for event in read_events(backend, tenant, job_id, after=after):
        if event.type == "output" and isinstance(delta := event.data.get("delta"), str):
            parts.append(delta)
        after = event.sequence_number
    return after, "".join(parts)


class OutputTexts:
    """The text deltas of jobs' ``output`` events, remembered per job so that the next look at a
    job reads only the events that came since (a poll of a long generation costs one short read,
    not the whole log). Holds at most ``max_chars`` characters; the least recently used go first.
    """

    def __init__(self, max_chars: int = 16_000_000) -> None:
        self.max_chars = max_chars
        self._texts: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        """How many jobs' texts are held."""
        return len(self._texts)

    async def text(self, backend: Backend, tenant: str, job_id: str) -> str:
        """The job's text so far; raises JobNotFound."""
        key = (tenant, job_id)
        last, text = self._texts.pop(key, (-1, ""))
        self._chars -= len(text)
        last, text = await _text_after(backend, tenant, job_id, last, text)
        self._texts[key] = (last, text)
        self._chars += len(text)
        while self._chars > self.max_chars and len(self._texts) > 1:
            _, (_, dropped) = self._texts.popitem(last=False)
            self._chars -= len(dropped)
        return text


async def follow_events(
    backend: Backend,
    tenant: str,
    job_id: str,
    *,
    after: int,
    idle: float = POLL_SECONDS,
    closing: asyncio.Event | None = None,
) -> AsyncGenerator[EventBatch, None]:
    """The events after ``after`` in batches as they come, ending with the one holding the
    terminal status event; an empty batch after each ``idle`` seconds in which none came (for
    keep-alives). Raises JobNotFound; ends quietly if the job is deleted once it was seen
    finished, or as soon as ``closing`` is set."""
    with backend.subscribe_job(job_id) as subscription:
        closer = None
        if closing is not None:
            closer = asyncio.ensure_future(closing.wait())
            closer.add_done_callback(lambda _: subscription.poke())
        try:
            async for batch in _follow(backend, tenant, job_id, after, idle, subscription, closing):
                yield batch
        finally:
            if closer is not None:
                closer.cancel()


async def _follow(
    backend: Backend,
    tenant: str,
    job_id: str,
    after: int,
    idle: float,
    subscription: Subscription,
    closing: asyncio.Event | None,
) -> AsyncGenerator[EventBatch, None]:
    log = _Log(backend, tenant, job_id, after, subscription)
    quiet_since = time.monotonic()
    while closing is None or not closing.is_set():
        events = await log.next_events()
        if events is None:
            return  # deleted after it ended: the stream just ends
        for i, event in enumerate(events):
            if is_terminal_event(event):
                yield events[: i + 1]
                return
        if events:
            quiet_since = time.monotonic()
            yield events
        if log.more_stored or await log.ended_since():
            continue
        quiet = time.monotonic() - quiet_since
        if quiet >= idle:
            quiet_since = time.monotonic()
            yield []
            quiet = 0.0
        # The subscription was made before the first read: whatever came since wakes it.
        log.read = not await subscription.wait(min(POLL_SECONDS, idle - quiet))


class _Log:
    """Where a follower is in the log, and whether it must read the store next."""

    def __init__(
        self, backend: Backend, tenant: str, job_id: str, after: int, subscription: Subscription
    ) -> None:
        self.backend, self.tenant, self.job_id = backend, tenant, job_id
        self.after = after
        self.subscription = subscription
        self.read = True
        self.ended = False  # the job was terminal, or gone, when last looked at
        self.page = EVENT_PAGE
        self.last: list[Event] | None = None  # what the last read of the store found

    async def next_events(self) -> list[Event] | None:
        """What came after the cursor: handed over in order, else read from the store (None:
        the job is gone after it ended)."""
        self.last = None
        if not self.read:
            handed, stale = self.subscription.take()
            events = [e for e in handed if e.sequence_number > self.after]
            if not stale and (not events or events[0].sequence_number == self.after + 1):
                return self._advance(events)
            # Told to read, or something is missing: the store has it all.
        self.subscription.take()  # what came before this read is in the store
        stored = await _page(
            self.backend, self.tenant, self.job_id, self.after, self.page, self.ended
        )
        self.last = stored
        return None if stored is None else self._advance(stored)

    def _advance(self, events: list[Event]) -> list[Event]:
        if events:
            self.after = events[-1].sequence_number
        return events

    @property
    def more_stored(self) -> bool:
        """The last read filled its page: more may be stored already (read again at once)."""
        if self.last is None:
            return False
        if len(self.last) == self.page:
            return True
        self.page = LIVE_PAGE
        return False

    async def ended_since(self) -> bool:
        """After a read that found nothing: True when the job ended (or went) since, so its
        terminal status event, committed with it, is to be read now."""
        if self.last is None or self.last or self.ended:
            return False
        job = await self.backend.get_job(self.tenant, self.job_id, with_result=False)
        if job is None or job.is_terminal:
            self.ended = self.read = True
            return True
        return False


async def _page(
    backend: Backend, tenant: str, job_id: str, after: int, limit: int, ended: bool
) -> list[Event] | None:
    """The next page of the log; None if the job is gone after it ended (JobNotFound if it is
    gone, or never was, before)."""
    events = await backend.list_events(tenant, job_id, after=after, limit=limit)
    if events is None and not ended:
        raise JobNotFound(job_id)
    return events
