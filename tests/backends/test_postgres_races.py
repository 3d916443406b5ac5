"""PostgreSQL: interleavings of concurrent transactions that must not lose a cancel, leave the
change feed asleep, kill the listener or deadlock a worker's own connections."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from longjobs import App, Context
from longjobs.backends.postgres import PostgresBackend
from longjobs.models import Status
from longjobs.settings import Settings
from tests.backends.contract import TENANT, create, start
from tests.integration.worker_harness import make_app, running_worker, wait_until_terminal


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(postgres_dsn, Settings())
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def test_a_cancel_racing_a_requeue_is_not_lost(
    pg: PostgresBackend, postgres_dsn: str
) -> None:
    """A running job that another transaction is moving back to pending (a retry, a requeue by
    the sweep, a release) while a cancel comes in: without locking the job first, the cancel
    would see "running" in one statement and "pending" in the next and match neither."""
    job = await start(pg)
    other = await asyncpg.connect(postgres_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        # What finish_jobs does for Failed(retry_in=0) (held_for_finish FOR UPDATE, settle):
        await other.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id)
        await other.execute(
            "UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_until = NULL "
            "WHERE id = $1",
            job.id,
        )
        cancel = asyncio.create_task(pg.request_cancel(TENANT, job.id))
        await asyncio.sleep(0.5)  # cancel_pending saw "running"; cancel_running now waits
        await tx.commit()
        answered = await cancel
    finally:
        await other.close()

    assert answered is not None
    stored = await pg.get_job(TENANT, job.id)
    assert stored is not None
    # SQLite and memory: the job is pending when the cancel runs, so it is cancelled at once.
    assert stored.status is Status.CANCELLED or stored.cancel_requested, (
        f"cancel lost: {stored.status}, cancel_requested={stored.cancel_requested}"
    )


async def test_a_change_hidden_by_an_older_transaction_wakes_the_feed_once_visible(
    pg: PostgresBackend, postgres_dsn: str
) -> None:
    """The feed shows only changes below the oldest running transaction. A change committed
    while an older transaction is still open is announced while still invisible; nothing is
    sent when the older one ends, so the backend looks again by itself."""
    _, cursor = await pg.changed_jobs(TENANT, None)
    older = await asyncpg.connect(postgres_dsn)
    try:
        tx = older.transaction()
        await tx.start()
        await older.fetchval("SELECT pg_current_xact_id()")  # a writer: it has an xid
        with pg.watch_job(None) as watch:  # what the feed does: watch, then read
            job = await create(pg)
            changes, cursor = await pg.changed_jobs(TENANT, cursor)
            assert changes == []  # hidden below the older transaction: expected
            watch.rearm()
            await tx.commit()  # e.g. a heartbeat: writes, notifies nobody
            woken = await watch.wait(2.0)
        changes, _ = await pg.changed_jobs(TENANT, cursor)
    finally:
        await older.close()

    assert [c.job.id for c in changes] == [job.id]  # readable now...
    assert woken is not None, "...but no one woke the feed to read it"


async def test_the_listener_survives_a_failed_listen(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN itself failing (the server going away between connect and LISTEN, as during a
    restart) is retried like a failed connect, instead of ending the listener."""
    real = asyncpg.Connection.add_listener
    failures = [asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")]

    async def flaky(self: asyncpg.Connection, channel: str, callback: object) -> None:
        if failures:
            raise failures.pop()
        await real(self, channel, callback)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncpg.Connection, "add_listener", flaky)
    backend = PostgresBackend(postgres_dsn, Settings())
    try:
        await asyncio.wait_for(backend.open(), 5)
    finally:
        await asyncio.wait_for(backend.close(), 5)


async def test_a_workers_heartbeat_and_flush_never_deadlock(pg: PostgresBackend) -> None:
    """A worker's heartbeat and its flush run on two pooled connections over the same rows; both
    lock them in id order, so PostgreSQL never has to break a deadlock by failing one (a failed
    flush would drop the reports it carried)."""
    from longjobs.backends.base import JobUpdate
    from longjobs.errors import StorageError
    from tests.backends.contract import KIND, LEASE, WORKER, make_job

    await pg.create_jobs([make_job() for _ in range(200)])
    jobs = await pg.claim_jobs(WORKER, [KIND], 200, LEASE)
    assert len(jobs) == 200
    # Real tables get ANALYZEd by autovacuum; then report_progress becomes a hash join probed
    # in the order of the updates while extend_leases scans the heap.
    async with pg.db.pool.acquire() as conn:
        await conn.execute("ANALYZE jobs")
    errors: list[str] = []
    # Worker.running is in claim order, which is not the heap order once jobs have priorities,
    # retries or were claimed in several batches: here one fixed permutation.
    running = sorted(jobs, key=lambda j: j.id[-6:])

    async def heartbeats() -> None:
        for _ in range(60):
            try:
                await pg.heartbeat(WORKER, [j.id for j in jobs], LEASE)
            except StorageError as exc:
                errors.append(str(exc))

    async def flushes() -> None:
        for i in range(60):
            order = running  # Worker.flush: in the order of Worker.running
            updates = [
                JobUpdate(j.id, j.attempt, [("log", {"i": i})], progress=i / 100) for j in order
            ]
            try:
                await pg.append_events(WORKER, updates)
            except StorageError as exc:
                errors.append(str(exc))

    await asyncio.gather(heartbeats(), flushes())
    assert errors == []


async def test_reports_flushed_just_before_a_handler_returns_are_never_dropped(
    postgres_dsn: str,
) -> None:
    """A handler streams output and returns while the worker's flush of its earlier output is
    still in flight: with a pool of connections the finish could commit first and the flush
    would then find the job finished (its output dropped). The worker lets the flush land
    first: every job's output is whole."""
    app = make_app(postgres_dsn, flush_interval=0.01)
    app.job(stream_letters)

    async with app, running_worker(app, concurrency=16):
        jobs = [await app.submit("stream_letters") for _ in range(60)]
        for job in jobs:
            await wait_until_terminal(app, job.id)
        texts = [await _output_text(app, job.id) for job in jobs]

    assert texts == ["abcdef"] * len(jobs)


async def stream_letters(ctx: Context) -> None:
    """Streams a to f as output deltas, a few milliseconds apart, then returns."""
    for part in "abcdef":
        await ctx.output(delta=part)
        await asyncio.sleep(random.uniform(0, 0.012))


async def _output_text(app: App, job_id: str) -> str:
    parts = [
        str(event.data["delta"])
        async for event in app.events(job_id, follow=False)
        if event.type == "output" and "delta" in event.data
    ]
    return "".join(parts)
