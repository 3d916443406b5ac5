"""Which jobs run when: the concurrency bound, priorities, delays."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from longjobs import Context, Status
from tests.integration.worker_harness import (
    LIVENESS,
    STORES,
    make_app,
    running_worker,
    sqlite_url,
    store_url,
    wait_until_terminal,
)


@pytest.mark.parametrize("store", STORES)
async def test_no_more_handlers_run_at_once_than_the_concurrency(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    release = asyncio.Event()
    three_running = asyncio.Event()
    now_running = 0
    most_running = 0

    @app.job
    async def blocker(ctx: Context, n: int) -> int:
        nonlocal now_running, most_running
        now_running += 1
        most_running = max(most_running, now_running)
        if now_running == 3:
            three_running.set()
        try:
            await release.wait()
            await asyncio.sleep(0.01)
        finally:
            now_running -= 1
        return n

    async with app, running_worker(app, concurrency=3):
        jobs = [await app.submit("blocker", n) for n in range(10)]
        await asyncio.wait_for(three_running.wait(), LIVENESS)
        await asyncio.sleep(0.5)  # time for a worker that ignored its bound to claim more
        running = (await app.list(status=[Status.RUNNING])).data
        held = most_running
        release.set()
        done = [await wait_until_terminal(app, j.id) for j in jobs]

    assert held == 3
    assert len(running) == 3
    assert most_running == 3
    assert [j.result for j in done] == list(range(10))


async def test_a_sync_handler_that_overran_its_timeout_keeps_its_slot_until_its_thread_ends(
    tmp_path: Path,
) -> None:
    """Python cannot stop a thread: the job is recorded timed out after the grace, and the
    thread keeps counting against the concurrency until it returns (no unbounded pile-up), while
    the other slots go on serving."""
    app = make_app(sqlite_url(tmp_path))
    unblock = threading.Event()

    @app.job(timeout=0.2, max_attempts=1)
    def stuck(ctx: Context) -> None:
        unblock.wait(10)  # a blocking call that never looks at ctx.cancelled

    @app.job
    def quick(ctx: Context) -> str:
        return "ran"

    try:
        async with app, running_worker(app, concurrency=2) as worker:
            poison = await app.submit("stuck")
            timed_out = await wait_until_terminal(app, poison.id)
            abandoned = worker.abandoned_threads
            healthy = await app.submit("quick")
            done = await app.wait(healthy.id, timeout=3.0)
            unblock.set()
            await asyncio.sleep(0.2)
            after = worker.abandoned_threads
    finally:
        unblock.set()

    assert timed_out.error is not None
    assert timed_out.error.type == "timeout"
    assert abandoned == 1
    assert done.status is Status.COMPLETED
    assert after == 0


@pytest.mark.parametrize("store", STORES)
async def test_higher_priority_jobs_run_first(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))
    order: list[int] = []

    @app.job
    async def ranked(ctx: Context, label: int) -> None:
        order.append(label)

    async with app:
        jobs = [
            await app.submit("ranked", priority, priority=priority)
            for priority in (0, 5, -1, 10, 5)
        ]
        async with running_worker(app, concurrency=1):
            for job in jobs:
                await wait_until_terminal(app, job.id)

    assert order == [10, 5, 5, 0, -1]


@pytest.mark.parametrize("store", STORES)
async def test_delayed_job_starts_only_once_due(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))
    started: list[float] = []

    @app.job
    async def reminder(ctx: Context) -> str:
        started.append(time.monotonic())
        return "sent"

    async with app, running_worker(app):
        submitted = time.monotonic()
        job = await app.submit("reminder", delay_seconds=0.3)
        await asyncio.sleep(0.15)
        early = await app.get(job.id)
        done = await wait_until_terminal(app, job.id)

    assert early.status is Status.PENDING
    assert done.status is Status.COMPLETED
    assert done.started_at is not None
    assert done.started_at >= job.created_at
    assert (done.started_at - job.created_at).total_seconds() >= 0.3  # on the store's clock
    assert started[0] - submitted >= 0.25  # and on ours, with room for clock granularity
    assert started[0] - submitted < LIVENESS
