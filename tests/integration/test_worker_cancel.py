"""Cancellation: pending jobs at once; running handlers through their cleanup; sticky."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from longjobs import Context, JobNotFound, RetryPolicy, Status
from tests.integration.worker_harness import (
    LIVENESS,
    STORES,
    assert_gap_free,
    events_of,
    make_app,
    running_worker,
    sqlite_url,
    statuses,
    store_url,
    wait_for,
    wait_for_job,
    wait_until_terminal,
)


@pytest.mark.parametrize("store", STORES)
async def test_cancelling_a_pending_job_cancels_it_at_once_and_it_never_runs(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    ran: list[str] = []

    @app.job
    async def later(ctx: Context) -> None:
        ran.append(ctx.job_id)

    async with app, running_worker(app):
        job = await app.submit("later", delay_seconds=0.3)
        answer = await app.cancel(job.id)
        stored = await app.get(job.id)
        await asyncio.sleep(0.6)  # past its due time: a worker must still not run it
        events = await events_of(app, job.id)
        final = await app.get(job.id)

    assert answer.status is Status.CANCELLED
    assert stored.status is Status.CANCELLED
    assert final.status is Status.CANCELLED
    assert final.attempt == 0
    assert ran == []
    assert statuses(events) == [("pending", 0), ("cancelled", 0)]


@pytest.mark.parametrize("store", STORES)
async def test_cancelling_a_running_job_runs_its_cleanup_and_records_cancelled(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    started = asyncio.Event()
    cleanup: list[str] = []

    @app.job
    async def long_generation(ctx: Context) -> str:
        async def close_upstream() -> None:
            cleanup.append(f"on_cancel:{ctx.cancel_reason}")

        ctx.on_cancel(close_upstream)
        await ctx.output(delta="Once upon a time")
        await ctx.log("streaming")
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleanup.append("finally")
        return "never"

    async with app, running_worker(app):
        job = await app.submit("long_generation")
        await wait_for(started)
        await asyncio.sleep(0.1)  # the partial output is flushed
        t0 = time.monotonic()
        requested = await app.cancel(job.id)
        done = await wait_until_terminal(app, job.id)
        elapsed = time.monotonic() - t0
        events = await events_of(app, job.id)

    assert requested.cancel_requested is True
    assert done.status is Status.CANCELLED
    assert done.cancel_requested is True
    assert done.error is None
    assert await app.result(job.id) is None
    assert elapsed < 2.0
    assert cleanup == ["on_cancel:cancel", "finally"]
    assert [e.data for e in events if e.type == "output"] == [{"delta": "Once upon a time"}]
    assert [e.data["message"] for e in events if e.type == "log"] == ["streaming"]
    assert statuses(events)[-1] == ("cancelled", 1)
    assert_gap_free(events)


async def test_sync_handler_polling_cancelled_stops(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))
    started = threading.Event()
    stopped = threading.Event()
    seen: list[int] = []

    @app.job
    def classify_batch(ctx: Context, items: int) -> int:
        started.set()
        done = 0
        give_up = time.monotonic() + 10
        while done < items and not ctx.cancelled and time.monotonic() < give_up:
            done += 1
            ctx.progress(done / items)
            time.sleep(0.01)
        seen.append(done)
        stopped.set()
        return done

    async with app, running_worker(app):
        job = await app.submit("classify_batch", 100_000)
        assert await asyncio.to_thread(started.wait, LIVENESS)
        await asyncio.sleep(0.1)
        await app.cancel(job.id)
        done = await wait_until_terminal(app, job.id)
        assert await asyncio.to_thread(stopped.wait, 2.0)

    assert done.status is Status.CANCELLED
    assert 0 < seen[0] < 100_000


async def test_handler_swallowing_cancellation_is_recorded_cancelled_after_cancel_grace(
    tmp_path: Path,
) -> None:
    app = make_app(sqlite_url(tmp_path), cancel_grace=0.3)
    started = asyncio.Event()
    returned = asyncio.Event()
    swallowed: list[str] = []

    @app.job
    async def stubborn(ctx: Context) -> str:
        started.set()
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                swallowed.append("CancelledError")
        returned.set()
        return "late result"

    async with app, running_worker(app):
        job = await app.submit("stubborn")
        await wait_for(started)
        await app.cancel(job.id)
        # Recorded once cancel_grace has passed, while the handler still runs.
        recorded = await app.wait(job.id, timeout=1.2)
        still_running = not returned.is_set()
        await wait_for(returned)
        await asyncio.sleep(0.2)  # its late finish reaches the store, and is refused
        final = await app.get(job.id)
        events = await events_of(app, job.id)

    assert swallowed == ["CancelledError"]
    assert recorded.status is Status.CANCELLED
    assert still_running
    assert final.status is Status.CANCELLED
    assert final.result is None
    assert await app.result(job.id) is None
    assert [s for s, _ in statuses(events)].count("cancelled") == 1
    assert "completed" not in [s for s, _ in statuses(events)]


async def test_handler_that_catches_cancellation_and_returns_a_result_is_recorded_cancelled(
    tmp_path: Path,
) -> None:
    """Once the worker has interrupted a handler for a cancel request, the job is cancelled
    however the handler ends; what it streamed before stays in the event log."""
    app = make_app(sqlite_url(tmp_path))
    started = asyncio.Event()

    @app.job
    async def wraps_up(ctx: Context) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "partial summary"
        return "full summary"

    async with app, running_worker(app):
        job = await app.submit("wraps_up")
        await wait_for(started)
        await app.cancel(job.id)
        done = await wait_until_terminal(app, job.id)

    assert done.status is Status.CANCELLED
    assert done.cancel_requested is True
    assert done.result is None


async def test_job_cancelled_while_waiting_for_its_retry_stays_cancelled(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))
    attempts: list[int] = []

    @app.job(max_attempts=3, retry=RetryPolicy(base_delay=0.5, jitter=False))
    async def fails_once(ctx: Context) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return "ran again"

    async with app, running_worker(app):
        job = await app.submit("fails_once")
        waiting = await wait_for_job(
            app, job.id, lambda j: j.status is Status.PENDING and j.attempt == 1
        )
        cancelled = await app.cancel(job.id)
        await asyncio.sleep(1.5)  # past the retry's due time and the worker's idle poll
        final = await app.get(job.id)
        again = await app.cancel(job.id)
        events = await events_of(app, job.id)

    assert waiting.status is Status.PENDING
    assert cancelled.status is Status.CANCELLED
    assert final.status is Status.CANCELLED
    assert again.status is Status.CANCELLED
    assert attempts == [1]
    assert statuses(events)[-1] == ("cancelled", 1)


@pytest.mark.parametrize("store", STORES)
async def test_deleting_a_running_job_stops_its_handler(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))
    started = asyncio.Event()
    stopped = asyncio.Event()

    @app.job
    async def doomed(ctx: Context) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    @app.job
    async def next_one(ctx: Context) -> str:
        return "ok"

    async with app, running_worker(app):
        job = await app.submit("doomed")
        await wait_for(started)
        await app.delete(job.id)
        await wait_for(stopped, timeout=3.0)
        other = await app.submit("next_one")
        other_done = await wait_until_terminal(app, other.id)
        with pytest.raises(JobNotFound):
            await app.get(job.id)

    assert other_done.status is Status.COMPLETED


async def test_cancel_requested_by_another_process_reaches_the_worker(tmp_path: Path) -> None:
    # The API and the worker as separate processes would be: two Apps on one SQLite file,
    # with no in-process notification between them.
    worker_app = make_app(sqlite_url(tmp_path))
    api_app = make_app(sqlite_url(tmp_path))
    started = asyncio.Event()
    cleanup: list[str | None] = []

    @worker_app.job
    async def research(ctx: Context) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleanup.append(ctx.cancel_reason)

    async with worker_app, api_app, running_worker(worker_app):
        job = await worker_app.submit("research")
        await wait_for(started)
        t0 = time.monotonic()
        await api_app.cancel(job.id)
        done = await wait_until_terminal(api_app, job.id)
        elapsed = time.monotonic() - t0

    assert done.status is Status.CANCELLED
    assert cleanup == ["cancel"]
    assert elapsed < 2.0  # within a heartbeat or two, not a lease
