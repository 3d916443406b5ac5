"""Graceful shutdown (F14): finish within the grace, or interrupt, save and release at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from longjobs import Context, Status
from longjobs.worker import Worker
from tests.integration.worker_harness import (
    LIVENESS,
    STORES,
    StopReport,
    events_of,
    make_app,
    running_worker,
    sqlite_url,
    statuses,
    stop_worker,
    store_url,
    until,
    wait_for,
    wait_until_terminal,
)


@pytest.mark.parametrize("store", STORES)
async def test_stop_lets_running_jobs_finish_within_the_grace_while_heartbeating(
    store: str, tmp_path: Path
) -> None:
    # The longest job outlives the 1 s lease: only heartbeats during the grace keep it ours.
    app = make_app(store_url(store, tmp_path), shutdown_grace=5.0)
    started: list[str] = []

    @app.job
    async def short(ctx: Context, seconds: float) -> float:
        started.append(ctx.job_id)
        await asyncio.sleep(seconds)
        return seconds

    async with app:
        worker = Worker(app, concurrency=3)
        task = asyncio.create_task(worker.run())
        jobs = [await app.submit("short", s) for s in (0.2, 0.5, 1.5)]
        await until(lambda: len(started) == 3)
        stop = await stop_worker(worker, task)
        done = [await app.get(j.id) for j in jobs]
        late = await app.submit("short", 0.0)
        await asyncio.sleep(0.3)
        not_taken = await app.get(late.id)

    assert [j.status for j in done] == [Status.COMPLETED] * 3
    assert [j.attempt for j in done] == [1, 1, 1]
    assert [j.result for j in done] == [0.2, 0.5, 1.5]
    # run() returned once the jobs were done, not after the whole grace.
    assert stop.seconds < 4.0
    assert not_taken.status is Status.PENDING  # a stopped worker claims nothing more


@pytest.mark.parametrize("store", STORES)
async def test_stop_past_the_grace_interrupts_saves_and_releases_jobs_uncounted(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path), shutdown_grace=0.1, cancel_grace=0.5)
    runs: list[dict[str, Any]] = []
    cleanup: list[tuple[str, str | None]] = []

    @app.job(max_attempts=2)
    async def long_analysis(ctx: Context, n: int) -> int:
        runs.append({"job": ctx.job_id, "attempt": ctx.attempt, "state": ctx.checkpoint_state})
        if ctx.checkpoint_state is not None:
            return int(ctx.checkpoint_state["step"]) + n
        await ctx.checkpoint({"step": 1})
        await ctx.progress(0.5, stage="half")
        try:
            await asyncio.sleep(30)
        finally:
            cleanup.append((ctx.job_id, ctx.cancel_reason))
        return -1

    stop = StopReport()

    async with app:
        jobs = [await app.submit("long_analysis", n) for n in range(3)]
        async with running_worker(app, concurrency=3, stop=stop) as first:
            await until(lambda: len(runs) == 3)
            await asyncio.sleep(0.2)  # the checkpoints are flushed
        released = [await app.get(j.id) for j in jobs]
        events = [await events_of(app, j.id) for j in jobs]
        async with running_worker(app, concurrency=3) as second:
            done = [await wait_until_terminal(app, j.id) for j in jobs]

    assert stop.seconds < 3.0  # grace 0.1 s + cancel grace 0.5 s
    assert sorted(cleanup) == sorted((j.id, "shutdown") for j in jobs)
    assert [j.status for j in released] == [Status.PENDING] * 3
    assert [j.attempt for j in released] == [0, 0, 0]  # the interrupted attempt is not counted
    assert [j.lease_owner for j in released] == [None] * 3
    assert [j.checkpoint for j in released] == [{"step": 1}] * 3
    for job_events in events:
        assert statuses(job_events)[-1] == ("pending", 0)
        assert job_events[-1].data["detail"]["reason"] == "released"
    assert [j.status for j in done] == [Status.COMPLETED] * 3
    assert [j.result for j in done] == [1, 2, 3]
    assert [j.attempt for j in done] == [1, 1, 1]  # the same attempt number again
    second_runs = runs[3:]
    assert sorted(r["job"] for r in second_runs) == sorted(j.id for j in jobs)
    assert {r["attempt"] for r in second_runs} == {1}
    assert [r["state"] for r in second_runs] == [{"step": 1}] * 3
    assert first.id != second.id


async def test_checkpoint_saved_by_a_handler_interrupted_at_shutdown_is_kept(
    tmp_path: Path,
) -> None:
    app = make_app(sqlite_url(tmp_path), shutdown_grace=0.1, cancel_grace=1.0)
    started = asyncio.Event()

    @app.job
    async def resumable(ctx: Context) -> None:
        await ctx.checkpoint({"done": 0})
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # The usual pattern: record how far we got, then let the cancellation through.
            await ctx.checkpoint({"done": 41, "saved_on": ctx.cancel_reason})
            await ctx.log("saved on shutdown")
            raise

    async with app:
        job = await app.submit("resumable")
        async with running_worker(app):
            await asyncio.wait_for(started.wait(), LIVENESS)
        released = await app.get(job.id)
        events = await events_of(app, job.id)

    assert released.status is Status.PENDING
    assert released.checkpoint == {"done": 41, "saved_on": "shutdown"}
    assert "saved on shutdown" in [e.data.get("message") for e in events]


async def test_stop_returns_promptly_when_a_handler_ignores_the_interruption(
    tmp_path: Path,
) -> None:
    app = make_app(sqlite_url(tmp_path), shutdown_grace=0.1, cancel_grace=0.3)
    started = asyncio.Event()
    finished = asyncio.Event()

    @app.job
    async def deaf(ctx: Context) -> str:
        started.set()
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                continue
        finished.set()
        return "ignored shutdown"

    stop = StopReport()

    async with app:
        job = await app.submit("deaf")
        async with running_worker(app, stop=stop):
            await asyncio.wait_for(started.wait(), LIVENESS)
        released = await app.get(job.id)
        await asyncio.wait_for(finished.wait(), LIVENESS)  # its late finish is refused
        await asyncio.sleep(0.2)
        after = await app.get(job.id)

    # grace + cancel grace, not the handler's 1.5 s (or the known stop() hang: its own test)
    assert stop.seconds < 1.2
    assert released.status is Status.PENDING
    assert released.attempt == 0
    assert after.status is Status.PENDING
    assert after.result is None


@pytest.mark.parametrize("store", STORES)
async def test_worker_cancel_watch_stops_when_cancelled_as_a_cancel_request_arrives(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job
    async def held(ctx: Context) -> None:
        return None

    async with app:
        job = await app.submit("held")
        (claimed,) = await app.backend.claim_jobs("worker-1", ["held"], 1, 30.0)
        with app.backend.watch_cancel("worker-1") as watch:
            waiting = asyncio.create_task(watch.wait(30.0))  # as Worker._cancel_loop waits
            await asyncio.sleep(0.05)
            await app.cancel(claimed.id)  # the wake-up ...
            waiting.cancel()  # ... and Worker.run's helper.cancel() in one loop iteration
            outcome = await asyncio.gather(waiting, return_exceptions=True)

    assert job.id == claimed.id
    assert isinstance(outcome[0], asyncio.CancelledError), f"the wait returned {outcome[0]!r}"


@pytest.mark.parametrize("store", STORES)
async def test_job_asked_to_cancel_while_its_worker_shuts_down_ends_cancelled_not_rerun(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path), shutdown_grace=0.1, cancel_grace=2.0)
    runs: list[int] = []
    interrupted = asyncio.Event()

    @app.job
    async def slow_cleanup(ctx: Context) -> None:
        runs.append(ctx.attempt)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            await asyncio.sleep(0.5)  # closing things takes a moment
            raise

    async with app:
        job = await app.submit("slow_cleanup")
        worker = Worker(app)
        task = asyncio.create_task(worker.run())
        await until(lambda: runs == [1])
        stopping = asyncio.create_task(stop_worker(worker, task))
        await wait_for(interrupted)  # interrupted for the shutdown, still cleaning up
        asked = await app.cancel(job.id)
        await stopping
        after_stop = await app.get(job.id)
        async with running_worker(app):  # another worker, free to take pending work
            await asyncio.sleep(1.0)
        final = await app.get(job.id)

    assert asked.cancel_requested is True
    assert after_stop.status is Status.CANCELLED
    assert final.status is Status.CANCELLED
    assert runs == [1]  # the user's cancel was not undone by the release
