"""Handler faults become typed errors; retries follow the policy; timeouts are hard deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from longjobs import Context, Event, JobError, PermanentError, RetryableError, RetryPolicy, Status
from longjobs.backends.base import NewJob
from longjobs.models import new_job_id
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
    wait_until_terminal,
)

FAST_RETRY = RetryPolicy(base_delay=0.01)


class FlakyError(Exception):
    pass


def retry_details(events: list[Event]) -> list[dict[str, Any]]:
    """The ``detail`` of every status event that sent the job back to pending for a retry."""
    return [
        e.data["detail"]
        for e in events
        if e.type == "status" and e.data["status"] == "pending" and e.data["attempt"] > 0
    ]


@pytest.mark.parametrize("store", STORES)
async def test_job_failing_twice_completes_on_its_third_attempt(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))
    attempts: list[int] = []

    @app.job(max_attempts=3, retry=FAST_RETRY)
    async def flaky(ctx: Context) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise FlakyError(f"attempt {ctx.attempt} broke")
        return "third time lucky"

    async with app, running_worker(app):
        job = await app.submit("flaky")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.attempt == 3
    assert done.result == "third time lucky"
    assert attempts == [1, 2, 3]
    assert statuses(events) == [
        ("pending", 0),
        ("running", 1),
        ("pending", 1),
        ("running", 2),
        ("pending", 2),
        ("running", 3),
        ("completed", 3),
    ]
    retries = retry_details(events)
    assert [r["error"]["type"] for r in retries] == ["FlakyError", "FlakyError"]
    assert [r["error"]["message"] for r in retries] == ["attempt 1 broke", "attempt 2 broke"]
    assert all(r["error"]["retryable"] is True and r["retry_in"] >= 0 for r in retries)
    assert_gap_free(events)


@pytest.mark.parametrize("store", STORES)
async def test_job_always_failing_ends_attempts_exhausted_at_max_attempts(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    attempts: list[int] = []

    @app.job(max_attempts=3, retry=FAST_RETRY)
    async def doomed(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise FlakyError("still broken")

    async with app, running_worker(app):
        job = await app.submit("doomed")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.FAILED
    assert done.attempt == done.max_attempts == 3
    assert attempts == [1, 2, 3]
    assert done.error is not None
    assert done.error.type == "attempts_exhausted"
    assert "FlakyError" in done.error.message
    assert "still broken" in done.error.message
    assert done.error.retryable is False
    assert statuses(events)[-1] == ("failed", 3)
    assert events[-1].data["detail"]["error"]["type"] == "attempts_exhausted"
    assert await app.result(job.id) is None


@pytest.mark.parametrize("store", STORES)
async def test_permanent_error_fails_at_once_with_its_type(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))
    attempts: list[int] = []

    @app.job(max_attempts=5, retry=FAST_RETRY)
    async def refuses(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise PermanentError("this document is encrypted", type="encrypted_document")

    async with app, running_worker(app):
        job = await app.submit("refuses")
        done = await wait_until_terminal(app, job.id)

    assert done.status is Status.FAILED
    assert done.attempt == 1
    assert attempts == [1]
    assert done.error == JobError(
        type="encrypted_document", message="this document is encrypted", retryable=False
    )


async def test_retryable_error_retry_after_overrides_the_policy_delay(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))
    started: list[float] = []

    # Without retry_after this policy would wait 30 s before the second attempt.
    @app.job(max_attempts=2, retry=RetryPolicy(base_delay=30.0, jitter=False))
    async def rate_limited(ctx: Context) -> int:
        started.append(time.monotonic())
        if ctx.attempt == 1:
            raise RetryableError("429 from upstream", type="rate_limited", retry_after=0.05)
        return ctx.attempt

    async with app, running_worker(app):
        job = await app.submit("rate_limited")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.result == 2
    (between,) = retry_details(events)
    assert between["retry_in"] == 0.05
    assert between["error"]["type"] == "rate_limited"
    assert started[1] - started[0] < LIVENESS  # not the policy's 30 s


@pytest.mark.parametrize("store", STORES)
async def test_timeout_fails_the_job_with_type_timeout_after_cleanup(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    cleanup: list[str] = []
    reasons: list[str | None] = []
    deadlines: list[float | None] = []

    @app.job(timeout=0.2, max_attempts=1)
    async def sleeper(ctx: Context) -> None:
        deadline = ctx.deadline
        deadlines.append(None if deadline is None else deadline.timestamp())
        ctx.on_cancel(lambda: reasons.append(ctx.cancel_reason))
        try:
            await asyncio.sleep(10)
        finally:
            cleanup.append("closed")

    async with app, running_worker(app):
        job = await app.submit("sleeper")
        t0 = time.monotonic()
        done = await wait_until_terminal(app, job.id)
        elapsed = time.monotonic() - t0

    assert done.status is Status.FAILED
    assert done.attempt == 1
    assert done.error is not None
    assert done.error.type == "timeout"
    assert cleanup == ["closed"]
    assert reasons == ["timeout"]
    assert elapsed < LIVENESS
    assert done.started_at is not None
    assert deadlines[0] is not None
    expected = (done.started_at + timedelta(seconds=0.2)).timestamp()
    assert deadlines[0] == pytest.approx(expected, abs=0.25)


async def test_timeout_is_retried_and_ends_attempts_exhausted(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))

    @app.job(timeout=0.1, max_attempts=2, retry=FAST_RETRY)
    async def always_slow(ctx: Context) -> None:
        await asyncio.sleep(10)

    async with app, running_worker(app):
        job = await app.submit("always_slow")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.FAILED
    assert done.attempt == 2
    assert done.error is not None
    assert done.error.type == "attempts_exhausted"
    (retry,) = retry_details(events)
    assert retry["error"]["type"] == "timeout"


async def test_sync_handler_sees_cancelled_when_its_deadline_passes(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))
    stopped = threading.Event()
    reasons: list[str | None] = []

    @app.job(timeout=0.2, max_attempts=1)
    def polling(ctx: Context) -> str:
        give_up = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < give_up:
            time.sleep(0.01)
        reasons.append(ctx.cancel_reason)
        stopped.set()
        return "stopped"

    async with app, running_worker(app):
        job = await app.submit("polling")
        done = await wait_until_terminal(app, job.id)
        assert await asyncio.to_thread(stopped.wait, LIVENESS)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "timeout"
    assert reasons == ["timeout"]


async def test_timeout_is_a_hard_deadline_even_for_a_handler_that_ignores_cancellation(
    tmp_path: Path,
) -> None:
    app = make_app(sqlite_url(tmp_path), cancel_grace=0.2)
    returned = asyncio.Event()

    @app.job(timeout=0.2, max_attempts=1)
    async def stubborn(ctx: Context) -> str:
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            try:
                await asyncio.sleep(until - time.monotonic())
            except asyncio.CancelledError:
                continue  # ignores the deadline
        returned.set()
        return "late"

    async with app, running_worker(app):
        job = await app.submit("stubborn")
        # timeout + cancel_grace is 0.4 s; the handler would only return after 2 s.
        early = await app.wait(job.id, timeout=1.5)
        await asyncio.wait_for(returned.wait(), LIVENESS)
        final = await wait_until_terminal(app, job.id)

    assert early.status is Status.FAILED
    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error.type == "timeout"
    assert final.result is None  # its late return was not recorded


@pytest.mark.parametrize("store", STORES)
async def test_arbitrary_exception_fails_the_job_typed_and_the_worker_keeps_going(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job(max_attempts=1)
    async def crashes(ctx: Context, n: int) -> None:
        raise KeyError(f"missing {n}")

    @app.job(max_attempts=1)
    def crashes_in_thread(ctx: Context) -> None:
        _ = 1 / 0

    @app.job
    async def healthy(ctx: Context, n: int) -> int:
        await asyncio.sleep(0.01)
        return n + 1

    async with app, running_worker(app, concurrency=2):
        bad = [await app.submit("crashes", i) for i in range(3)]
        in_thread = await app.submit("crashes_in_thread")
        good = [await app.submit("healthy", i) for i in range(5)]
        bad_done = [await wait_until_terminal(app, j.id) for j in bad]
        thread_done = await wait_until_terminal(app, in_thread.id)
        good_done = [await wait_until_terminal(app, j.id) for j in good]
        after = await app.submit("healthy", 100)
        after_done = await wait_until_terminal(app, after.id)

    assert [j.status for j in bad_done] == [Status.FAILED] * 3
    assert [j.error.type if j.error else None for j in bad_done] == ["KeyError"] * 3
    assert bad_done[1].error is not None
    assert "missing 1" in bad_done[1].error.message
    assert thread_done.status is Status.FAILED
    assert thread_done.error is not None
    assert thread_done.error.type == "ZeroDivisionError"
    assert [j.result for j in good_done] == [1, 2, 3, 4, 5]
    assert after_done.result == 101


@pytest.mark.parametrize("store", STORES)
async def test_stored_input_that_fails_the_schema_fails_invalid_input_without_retry(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    ran: list[int] = []

    @app.job(max_attempts=3, retry=FAST_RETRY)
    async def needs_int(ctx: Context, n: int) -> int:
        ran.append(n)
        return n

    async with app, running_worker(app):
        # Stored behind the App's validation, as an older app version or another writer might.
        job, _ = await app.backend.create_job(
            NewJob(id=new_job_id(), tenant="default", kind="needs_int", input="x", max_attempts=3)
        )
        done = await wait_until_terminal(app, job.id)
        ok = await app.submit("needs_int", 7)
        ok_done = await wait_until_terminal(app, ok.id)

    assert done.status is Status.FAILED
    assert done.attempt == 1
    assert done.error is not None
    assert done.error.type == "invalid_input"
    assert ran == [7]
    assert ok_done.status is Status.COMPLETED


async def test_job_of_a_kind_without_handler_fails_unknown_kind(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))

    @app.job
    async def known(ctx: Context) -> None:
        return None

    async with app:
        job, _ = await app.backend.create_job(
            NewJob(id=new_job_id(), tenant="default", kind="retired_kind", input=None)
        )
        # A worker told to serve a kind its app no longer registers.
        async with running_worker(app, kinds=["known", "retired_kind"]):
            done = await wait_until_terminal(app, job.id)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error.type == "unknown_kind"
