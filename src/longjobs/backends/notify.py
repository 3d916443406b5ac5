"""In-process wake-ups shared by the backends: "work is due", "job X changed", "cancel for W".

A ``Watch`` is registered the moment it is created, so a caller can watch, then read the store,
then wait, and never miss a change that lands between the read and the wait. Watches are futures
on the owning event loop; ``fire`` may be called from that loop only (the SQLite writer thread
reaches it through ``loop.call_soon_threadsafe``).

A ``Subscription`` is a lasting watch on one job's log for a follower (an event stream): it
collects what happens between two waits, so nothing is missed while the follower is busy sending.
When the committing process hands over the events it wrote, the follower takes them from the
subscription instead of reading them back from the store; otherwise it is told to read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self

Wake = Literal["local", "external"]

MAX_HANDED = 1000
"""Events a subscription holds at most; past that its follower reads the store (memory per
follower stays bounded however slowly it sends)."""

WORK = "work"
ANY_JOB = "job:*"


def job_key(job_id: str) -> str:
    return "job:" + job_id


def cancel_key(worker: str) -> str:
    return "cancel:" + worker


class _Registered:
    """Registered on creation; ``close()`` (or the end of a ``with`` block) unregisters."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Watch(_Registered):
    """A one-shot wake-up for one key; re-arm it with ``rearm()`` to wait again."""

    def __init__(self, notifier: Notifier, key: str) -> None:
        self._notifier = notifier
        self._key = key
        self._future: asyncio.Future[Wake] | None = None
        self.rearm()

    def rearm(self) -> None:
        self.close()
        self._future = asyncio.get_running_loop().create_future()
        self._notifier.add(self._key, self._future)

    async def wait(self, timeout: float) -> Wake | None:
        """ "local" when this process fired the key, "external" when another process changed the
        store (``fire_all``), None on timeout. Returns at once if it already fired."""
        future = self._future
        if future is None or (timeout <= 0 and not future.done()):
            return None
        # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives in the step
        # its future completes (CPython gh-86296), and then a worker would never stop.
        done, _ = await asyncio.wait({future}, timeout=timeout)
        return future.result() if done else None

    def close(self) -> None:
        if self._future is not None:
            self._notifier.discard(self._key, self._future)
            self._future = None


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


class Subscription(_Registered):
    """What happened to one job since the follower last looked: the events handed over by the
    process that committed them (``events``, in commit order), and whether something else
    changed that only a read of the store shows (``stale``). Registered when created."""

    __slots__ = ("_notifier", "_waiter", "events", "key", "stale")

    def __init__(self, notifier: Notifier, key: str) -> None:
        self._notifier = notifier
        self.key = key
        self.events: list[Any] = []
        self.stale = False
        self._waiter: asyncio.Future[bool] | None = None
        notifier.subscribe(self)

    def take(self) -> tuple[list[Any], bool]:
        """The events handed over and the stale flag since the last take; both are reset."""
        events, stale = self.events, self.stale
        self.events, self.stale = [], False
        return events, stale

    async def wait(self, timeout: float) -> bool:
        """True as soon as there is something to take (at once if there already is), False
        after ``timeout`` seconds of nothing."""
        if self.events or self.stale:
            return True
        if timeout <= 0:
            return False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        timer = waiter.get_loop().call_later(timeout, _expire, waiter)
        try:
            return await waiter is not None
        finally:
            timer.cancel()
            self._waiter = None

    def poke(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def close(self) -> None:
        self._notifier.unsubscribe(self)


class DueWorkWatch:
    """A watch for due work shared by the stores other processes write to. A local submission
    (or a notification that names work) wakes it at once; anything else that may have made work
    due (another process's write, a delayed job or a retry coming due) is checked with the cheap
    ``has_due_work`` read every ``check_every`` seconds, so idle workers do not claim for
    nothing."""

    def __init__(
        self,
        notifier: Notifier,
        has_due_work: Callable[[], Awaitable[bool]],
        *,
        check_every: float = 0.25,
    ) -> None:
        self._has_due_work = has_due_work
        self._check_every = check_every
        self._watch = notifier.watch(WORK)

    async def wait(self, timeout: float) -> Wake | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            woken = await self._watch.wait(min(remaining, self._check_every))
            if woken == "local":
                return woken
            self._watch.rearm()
            if await self._has_due_work():
                return woken or "external"
        return None

    def close(self) -> None:
        self._watch.close()


class Notifier:
    """Keyed one-shot wake-ups. A fire wakes every watch of its keys (and every ``ANY_JOB``
    watch when any job key fires), and marks every subscription of its keys stale unless the
    fire hands over the key's events."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[Wake]]] = {}
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._job_keys = 0  # keys of jobs watched or followed (read from other threads)

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters) or bool(self._subscriptions)

    @property
    def follows_jobs(self) -> bool:
        """True while anyone watches or follows a job (any thread may ask; the answer may be
        late by one registration, which then reads the store itself)."""
        return self._job_keys > 0

    def watch(self, key: str) -> Watch:
        return Watch(self, key)

    def subscription(self, key: str) -> Subscription:
        return Subscription(self, key)

    def subscribed(self, key: str) -> bool:
        """Whether ``key`` has subscriptions (any thread may ask, as for ``follows_jobs``)."""
        return key in self._subscriptions

    def subscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.key)
        if subscriptions is None:
            subscriptions = self._subscriptions[subscription.key] = set()
            self._job_keys += 1
        subscriptions.add(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.key)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.key]
                self._job_keys -= 1

    def add(self, key: str, future: asyncio.Future[Wake]) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = set()
            self._job_keys += key.startswith("job:")
        waiters.add(future)

    def discard(self, key: str, future: asyncio.Future[Wake]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                self._drop(key)

    def _drop(self, key: str) -> None:
        del self._waiters[key]
        self._job_keys -= key.startswith("job:")

    def fire(self, keys: Iterable[str], events: Mapping[str, Sequence[Any]] | None = None) -> None:
        """Wake the watches of ``keys``; subscriptions of a key in ``events`` get its events,
        the others are marked stale."""
        any_job = False
        for key in keys:
            any_job = any_job or key.startswith("job:")
            self._wake(key, "local")
            subscriptions = self._subscriptions.get(key)
            if subscriptions:
                self._hand(subscriptions, events.get(key) if events else None)
        if any_job:
            self._wake(ANY_JOB, "local")

    def fire_foreign(
        self, job_keys: Iterable[str], events: Mapping[str, Sequence[Any]] | None = None
    ) -> None:
        """Another process changed the store: wake every watch that is not of one job (work,
        cancels, any job) and the watches of ``job_keys``; their subscriptions get the events
        in ``events``, or are marked stale."""
        for key in [k for k in self._waiters if not k.startswith("job:") or k == ANY_JOB]:
            self._wake(key, "external")
        for key in job_keys:
            self._wake(key, "external")
            subscriptions = self._subscriptions.get(key)
            if subscriptions:
                self._hand(subscriptions, events.get(key) if events else None)

    @staticmethod
    def _hand(subscriptions: set[Subscription], events: Sequence[Any] | None) -> None:
        for subscription in subscriptions:
            if events and len(subscription.events) < MAX_HANDED:
                subscription.events.extend(events)
            else:  # told to read, or a follower that is not keeping up: the store has it
                subscription.events.clear()
                subscription.stale = True
            subscription.poke()

    def fire_jobs(self, job_keys: Iterable[str]) -> None:
        """Another process changed these jobs (and told which): wake their watches, the watches
        of any job, and mark their subscriptions stale; work and cancel watches sleep on."""
        for key in job_keys:
            self._wake(key, "external")
            subscriptions = self._subscriptions.get(key)
            if subscriptions:
                self._hand(subscriptions, None)
        self._wake(ANY_JOB, "external")

    def fire_all(self) -> None:
        """Wake everyone: another process changed the store and we cannot tell what."""
        for key in list(self._waiters):
            self._wake(key, "external")
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.stale = True
                subscription.poke()

    def _wake(self, key: str, how: Wake) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            return
        self._drop(key)
        for future in waiters:
            if not future.done():
                future.set_result(how)
