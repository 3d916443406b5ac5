"""At-least-once with fencing: checkpoints resume a retried job; a zombie attempt's writes are
refused (RELIABILITY.md I3, F2, F7)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from longjobs import App, Context, RetryPolicy, Status
from tests.integration.worker_harness import (
    STORES,
    assert_gap_free,
    events_of,
    expire_lease,
    make_app,
    make_settings,
    running_worker,
    statuses,
    store_url,
    until,
    wait_for,
    wait_until_terminal,
)

FAST_RETRY = RetryPolicy(base_delay=0.01)
SLOW_HEARTBEAT = make_settings(lease_seconds=30.0, shutdown_grace=0.2)
"""A worker that heartbeats every 10 s: it cannot learn of a lost lease that way in a test."""


@pytest.mark.parametrize("store", STORES)
async def test_retried_attempt_resumes_from_the_checkpoint_with_the_same_idempotency_key(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    seen: list[dict[str, Any]] = []
    processed: list[int] = []

    @app.job(max_attempts=3, retry=FAST_RETRY)
    async def chunks(ctx: Context, total: int) -> list[int]:
        state = ctx.checkpoint_state or {"next": 0}
        seen.append(
            {
                "attempt": ctx.attempt,
                "state": ctx.checkpoint_state,
                "key": ctx.idempotency_key,
                "effect": ctx.effect_key("email"),
            }
        )
        for chunk in range(state["next"], total):
            if ctx.attempt == 1 and chunk == 3:
                raise ConnectionError("upstream reset")
            processed.append(chunk)
            await ctx.checkpoint({"next": chunk + 1})
        return processed

    async with app, running_worker(app):
        job = await app.submit("chunks", 5)
        done = await wait_until_terminal(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.attempt == 2
    assert processed == [0, 1, 2, 3, 4]  # chunks 0-2 were not done twice
    assert done.result == [0, 1, 2, 3, 4]
    assert [s["attempt"] for s in seen] == [1, 2]
    assert seen[0]["state"] is None
    assert seen[1]["state"] == {"next": 3}
    assert seen[0]["key"] == seen[1]["key"]
    assert seen[0]["effect"] == seen[1]["effect"] == f"{seen[0]['key']}:email"
    assert done.checkpoint == {"next": 5}


def _register_zombie_kind(
    app: App, gates: dict[int, asyncio.Event], log: list[tuple[int, str]], effects: list[str]
) -> None:
    """One kind whose attempt ``n`` says it started, then waits for ``gates[n]``."""

    @app.job(max_attempts=3, retry=FAST_RETRY)
    async def charge(ctx: Context) -> str:
        attempt = ctx.attempt
        ctx.on_cancel(lambda: log.append((attempt, f"on_cancel:{ctx.cancel_reason}")))
        log.append((attempt, "started"))
        try:
            await gates[attempt].wait()
        except asyncio.CancelledError:
            log.append((attempt, f"interrupted:{ctx.cancel_reason}"))
            raise
        if attempt == 1:
            await ctx.progress(0.9, message="zombie report")  # travels with the finish
        effects.append(ctx.effect_key("charge"))  # the key an external charge is sent with
        log.append((attempt, "returned"))
        return f"attempt {attempt}"


def _second_app(app: App, store: str, register: Callable[[App], None]) -> App:
    """Worker B's app: another App on the same SQLite file (as another process would have), or
    the same app for ``memory://`` whose store lives in the app."""
    if store == "memory":
        return app
    other = App(app.database_url, settings=app.settings)
    register(other)
    return other


def _started(log: list[tuple[int, str]], attempt: int) -> bool:
    return (attempt, "started") in log


@pytest.mark.parametrize("store", STORES)
async def test_worker_losing_its_lease_is_interrupted_and_the_newer_attempt_wins(
    store: str, tmp_path: Path
) -> None:
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    log: list[tuple[int, str]] = []
    effects: list[str] = []
    app_a = make_app(store_url(store, tmp_path))
    _register_zombie_kind(app_a, gates, log, effects)
    app_b = _second_app(app_a, store, lambda a: _register_zombie_kind(a, gates, log, effects))

    async with app_a, app_b, running_worker(app_a, concurrency=1):
        job = await app_a.submit("charge")
        await until(lambda: _started(log, 1))
        await expire_lease(app_a, job.id)
        async with running_worker(app_b, concurrency=1):
            await until(lambda: _started(log, 2))
            # A learns at its next heartbeat that attempt 1 is no longer its own.
            await until(lambda: (1, "interrupted:lease_lost") in log, timeout=3.0)
            gates[2].set()
            done = await wait_until_terminal(app_a, job.id)
            events = await events_of(app_a, job.id)

    assert done.status is Status.COMPLETED
    assert done.attempt == 2
    assert done.result == "attempt 2"
    assert (1, "on_cancel:lease_lost") in log
    assert (1, "returned") not in log
    assert [s for s, _ in statuses(events)].count("completed") == 1
    assert statuses(events)[-1] == ("completed", 2)
    assert effects == [f"{job.id}:charge"]
    assert_gap_free(events)


@pytest.mark.parametrize("store", STORES)
async def test_zombie_attempt_finishing_late_is_refused_and_the_newer_result_stands(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    log: list[tuple[int, str]] = []
    effects: list[str] = []
    app_a = make_app(store_url(store, tmp_path))
    _register_zombie_kind(app_a, gates, log, effects)
    app_b = _second_app(app_a, store, lambda a: _register_zombie_kind(a, gates, log, effects))
    caplog.set_level(logging.WARNING, logger="longjobs.worker")

    async with (
        app_a,
        app_b,
        running_worker(app_a, concurrency=1, settings=SLOW_HEARTBEAT) as worker_a,
    ):
        job = await app_a.submit("charge")
        await until(lambda: _started(log, 1))
        await expire_lease(app_a, job.id)
        async with running_worker(app_b, concurrency=1) as worker_b:
            await until(lambda: _started(log, 2))
            # Both attempts now run at once (F7). A wakes first and tries to report and finish.
            gates[1].set()
            await until(lambda: (1, "returned") in log)
            await asyncio.sleep(0.2)  # its finish has been tried
            during = await app_a.get(job.id)
            gates[2].set()
            done = await wait_until_terminal(app_a, job.id)
            events = await events_of(app_a, job.id)

    assert during.status is Status.RUNNING
    assert during.attempt == 2
    assert during.lease_owner == worker_b.id != worker_a.id
    assert during.message != "zombie report"
    assert done.status is Status.COMPLETED
    assert done.result == "attempt 2"
    assert "zombie report" not in [e.data.get("message") for e in events]
    assert [s for s, _ in statuses(events)].count("completed") == 1
    # Both attempts made the charge call (at-least-once), under one key: the receiver applies it
    # once (RELIABILITY.md I6).
    assert effects == [f"{job.id}:charge"] * 2
    assert "lease_lost" in caplog.text
    assert_gap_free(events)


@pytest.mark.parametrize("store", STORES)
async def test_zombie_report_is_refused_and_stops_the_zombie_before_its_heartbeat(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    started = asyncio.Event()
    resume = asyncio.Event()
    log: list[tuple[int, str]] = []

    @app.job(max_attempts=3)
    async def reporter(ctx: Context) -> str:
        started.set()
        await resume.wait()
        await ctx.progress(0.5, message=f"attempt {ctx.attempt} report")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            log.append((ctx.attempt, f"interrupted:{ctx.cancel_reason}"))
            raise
        return "never"

    async with app, running_worker(app, concurrency=1, settings=SLOW_HEARTBEAT):
        job = await app.submit("reporter")
        await wait_for(started)
        await expire_lease(app, job.id)
        resume.set()
        await until(lambda: bool(log), timeout=3.0)  # its heartbeat is 10 s away
        events = await events_of(app, job.id)
        job_now = await app.get(job.id)

    assert log[0] == (1, "interrupted:lease_lost")
    assert "attempt 1 report" not in [e.data.get("message") for e in events]
    assert job_now.message != "attempt 1 report"


async def test_worker_reclaiming_its_own_lost_job_stops_the_stale_attempt(tmp_path: Path) -> None:
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    log: list[tuple[int, str]] = []
    effects: list[str] = []
    app = make_app(store_url("sqlite", tmp_path))
    _register_zombie_kind(app, gates, log, effects)

    async with app, running_worker(app, concurrency=2, settings=SLOW_HEARTBEAT):
        job = await app.submit("charge")
        await until(lambda: _started(log, 1))
        # e.g. the worker was paused (F2) and its own sweeper ran first after it woke up.
        await expire_lease(app, job.id)
        await until(lambda: _started(log, 2))
        stale_stopped = True
        try:
            await until(lambda: (1, "interrupted:lease_lost") in log, timeout=2.0)
        except TimeoutError:
            stale_stopped = False
        gates[1].set()  # a stale attempt still running ends with the test
        gates[2].set()
        done = await wait_until_terminal(app, job.id)
        await until(
            lambda: any(a == 1 and s in {"returned", "interrupted:lease_lost"} for a, s in log)
        )

    assert done.result == "attempt 2"
    assert stale_stopped, "attempt 1 still runs beside attempt 2 in the same worker"
