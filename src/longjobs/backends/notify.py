"""In-process wake-ups shared by the backends: "work is due", "job X changed", "cancel for W".

A ``Watch`` is registered the moment it is created, so a caller can watch, then read the store,
then wait, and never miss a change that lands between the read and the wait. Watches are futures
on the owning event loop; ``fire`` may be called from that loop only (the SQLite writer thread
reaches it through ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Literal

Wake = Literal["local", "external"]

WORK = "work"
ANY_JOB = "job:*"


def job_key(job_id: str) -> str:
    return "job:" + job_id


def cancel_key(worker: str) -> str:
    return "cancel:" + worker


class Watch:
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

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Notifier:
    """Keyed one-shot wake-ups. A fire wakes every watch of its keys (and every ``ANY_JOB``
    watch when any job key fires)."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[Wake]]] = {}

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def watch(self, key: str) -> Watch:
        return Watch(self, key)

    def add(self, key: str, future: asyncio.Future[Wake]) -> None:
        self._waiters.setdefault(key, set()).add(future)

    def discard(self, key: str, future: asyncio.Future[Wake]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[key]

    def fire(self, keys: Iterable[str]) -> None:
        any_job = False
        for key in keys:
            any_job = any_job or key.startswith("job:")
            self._wake(key, "local")
        if any_job:
            self._wake(ANY_JOB, "local")

    def fire_all(self) -> None:
        """Wake everyone: another process changed the store and we cannot tell what."""
        for key in list(self._waiters):
            self._wake(key, "external")

    def _wake(self, key: str, how: Wake) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(how)
