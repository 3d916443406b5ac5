"""Shared pieces of the worker integration tests: short settings, a running worker, probes.

Every test runs a real ``Worker`` as an asyncio task against a real store (a SQLite file, and for
the most important tests ``memory://`` too) and asserts only what the store records.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longjobs import App, Event, Job, Settings, Status
from longjobs.backends.memory import MemoryBackend
from longjobs.worker import Worker

BASE_SETTINGS: dict[str, Any] = {
    "lease_seconds": 1.0,
    "sweep_interval": 0.2,
    "flush_interval": 0.02,
    "poll_interval": 0.02,
    "shutdown_grace": 2.0,
    "cancel_grace": 0.5,
}
LIVENESS = 5.0
"""Generous bound for anything that should happen "soon"; never a performance assertion."""


def make_settings(**overrides: Any) -> Settings:
    return Settings(**{**BASE_SETTINGS, **overrides})


def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "jobs.db")


def make_app(url: str, **overrides: Any) -> App:
    return App(url, settings=make_settings(**overrides))


@asynccontextmanager
async def running_worker(
    app: App,
    *,
    concurrency: int = 4,
    settings: Settings | None = None,
    kinds: list[str] | None = None,
    stop: StopReport | None = None,
) -> AsyncIterator[Worker]:
    """A worker running as a task for the duration of the block; stopped gracefully after it
    (how the stop went is written to ``stop``)."""
    worker = Worker(app, concurrency=concurrency, settings=settings or app.settings, kinds=kinds)
    task = asyncio.create_task(worker.run(), name=f"worker {worker.id}")
    try:
        yield worker
    finally:
        report = await stop_worker(worker, task)
        if stop is not None:
            stop.seconds = report.seconds


@dataclass
class StopReport:
    seconds: float = 0.0
    """From stop() until run() returned."""


async def stop_worker(worker: Worker, task: asyncio.Task[None]) -> StopReport:
    """``stop()``, then wait for ``run()`` to return; re-raises a crash of the worker and fails
    when run() does not return within the grace periods and a margin."""
    t0 = time.monotonic()
    worker.stop()
    bound = worker.settings.shutdown_grace + worker.settings.cancel_grace + 2.0
    done, _ = await asyncio.wait([task], timeout=bound)
    if not done:
        task.cancel()
        await asyncio.wait([task])
        raise AssertionError(f"Worker.run() did not return within {bound:g} s of stop()")
    task.result()
    return StopReport(seconds=time.monotonic() - t0)


async def events_of(app: App, job_id: str) -> list[Event]:
    return [e async for e in app.events(job_id, follow=False)]


def statuses(events: list[Event]) -> list[tuple[str, int]]:
    """``(status, attempt)`` of every status event, in order."""
    return [(e.data["status"], e.data["attempt"]) for e in events if e.type == "status"]


def assert_gap_free(events: list[Event]) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def wait_until_terminal(app: App, job_id: str, timeout: float = LIVENESS) -> Job:
    job = await app.wait(job_id, timeout=timeout)
    assert job.is_terminal, f"{job_id} still {job.status} after {timeout} s"
    return job


async def wait_for_job(
    app: App, job_id: str, predicate: Callable[[Job], bool], timeout: float = LIVENESS
) -> Job:
    """The job as soon as ``predicate`` holds for it (polled: passing states are short)."""
    async with asyncio.timeout(timeout):
        while not predicate(job := await app.get(job_id)):  # noqa: ASYNC110 - a store read
            await asyncio.sleep(0.005)
    return job


async def until(predicate: Callable[[], bool], timeout: float = LIVENESS) -> None:
    """Return once ``predicate()`` holds: for what handlers record in plain lists."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the handlers' records are plain lists
            await asyncio.sleep(0.005)


async def wait_for(event: asyncio.Event, timeout: float = LIVENESS) -> None:
    async with asyncio.timeout(timeout):
        await event.wait()


async def expire_lease(app: App, job_id: str) -> None:
    """Make the current attempt's lease look expired to the store and sweep it (the F2/F7 hook):
    the job goes back to pending (or to a newer attempt) while its worker still runs it."""
    before = await app.get(job_id)
    assert before.status is Status.RUNNING
    backend = app.backend
    for _ in range(100):
        if isinstance(backend, MemoryBackend):
            backend.clock_offset += 120.0  # time passes for the store: every lease expires
            await backend.sweep()
        else:
            path = app.database_url.removeprefix("sqlite:///")
            await asyncio.to_thread(_expire_in_sqlite, path, job_id)
            await backend.sweep()
        job = await app.get(job_id)
        if job.status is not Status.RUNNING or job.attempt > before.attempt:
            return
        # The worker's heartbeat extended the lease between our write and the sweep: again.
    raise AssertionError(f"could not expire the lease of {job_id}")


def _expire_in_sqlite(path: str, job_id: str) -> None:
    with closing(sqlite3.connect(path, timeout=10.0)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET lease_until = 0 WHERE id = ? AND status = 'running'", (job_id,)
        )


STORES = ["sqlite", "memory"]


def store_url(store: str, tmp_path: Path) -> str:
    """The URL of a fresh store of this kind: a real SQLite file, or ``memory://``."""
    return sqlite_url(tmp_path) if store == "sqlite" else "memory://"
