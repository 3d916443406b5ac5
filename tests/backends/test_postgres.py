"""PostgreSQL: migrations, and several processes (here: backend instances) on one database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from longjobs.backends.postgres import SCHEMA_VERSION, PostgresBackend
from longjobs.backends.postgres_db import mapped_errors, payloads
from longjobs.errors import SchemaVersionError, StorageError, StorageUnavailable
from longjobs.models import Status
from longjobs.settings import Settings
from tests.backends.contract import (
    KIND,
    LEASE,
    OTHER_WORKER,
    TENANT,
    WORKER,
    create,
    make_job,
    start,
    update,
)

WAKE_WITHIN = 1.0


async def _open(url: str) -> PostgresBackend:
    backend = PostgresBackend(url, Settings())
    await backend.open()
    return backend


async def _versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM longjobs_schema ORDER BY 1")]
    finally:
        await conn.close()


async def test_opening_applies_the_migrations_once(postgres_dsn: str) -> None:
    for _ in range(2):
        backend = await _open(postgres_dsn)
        await backend.close()

    assert await _versions(postgres_dsn) == list(range(1, SCHEMA_VERSION + 1))


async def test_processes_opening_a_new_database_together_all_succeed(postgres_dsn: str) -> None:
    backends = await asyncio.gather(*(_open(postgres_dsn) for _ in range(6)))
    try:
        job = await create(backends[0])
        assert (await backends[5].get_job(TENANT, job.id)) is not None
    finally:
        await asyncio.gather(*(b.close() for b in backends))

    assert await _versions(postgres_dsn) == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_1_database_gains_webhooks_when_opened(postgres_dsn: str) -> None:
    backend = await _open(postgres_dsn)
    job = await create(backend)
    await backend.close()
    conn = await asyncpg.connect(postgres_dsn)  # back to what version 1 made
    await conn.execute(
        "DROP TABLE webhook_endpoints, webhook_outbox, webhook_deliveries, workers;"
        " ALTER TABLE jobs DROP COLUMN webhook_url; DELETE FROM longjobs_schema WHERE version > 1;"
    )
    await conn.close()

    backend = await _open(postgres_dsn)
    try:
        assert (await backend.get_job(TENANT, job.id)) == job
        with_url = await create(backend, webhook_url="https://example.com/hook")
        await backend.request_cancel(TENANT, with_url.id)
        claimed = await backend.claim_deliveries("owner", 10, 30.0)
        assert [(d.job_id, d.type) for d in claimed] == [(with_url.id, "job.cancelled")]
    finally:
        await backend.close()
    assert await _versions(postgres_dsn) == [1, 2, 3]


async def test_a_version_2_database_gains_the_worker_registry_when_opened(
    postgres_dsn: str,
) -> None:
    backend = await _open(postgres_dsn)
    job = await create(backend)
    await backend.close()
    conn = await asyncpg.connect(postgres_dsn)  # back to what version 2 made
    await conn.execute("DROP TABLE workers; DELETE FROM longjobs_schema WHERE version > 2;")
    await conn.close()

    backend = await _open(postgres_dsn)
    try:
        await backend.worker_seen(WORKER, ttl_seconds=30.0)
        stats = await backend.queue_stats(TENANT)
        assert (stats.workers, stats.counts) == (1, {(Status.PENDING, job.kind): 1})
    finally:
        await backend.close()
    assert await _versions(postgres_dsn) == [1, 2, 3]


async def test_a_worker_seen_drops_the_registrations_that_ran_out(postgres_dsn: str) -> None:
    backend = await _open(postgres_dsn)
    try:
        await backend.worker_seen(WORKER, ttl_seconds=0.05)
        await backend.worker_seen("worker-3", ttl_seconds=30.0)
        await asyncio.sleep(0.1)

        await backend.worker_seen(OTHER_WORKER, ttl_seconds=30.0)

        rows = await backend.db.fetch("SELECT id FROM workers ORDER BY id")
        assert [r["id"] for r in rows] == [OTHER_WORKER, "worker-3"]
    finally:
        await backend.close()


async def test_a_newer_schema_is_refused_and_left_alone(postgres_dsn: str) -> None:
    backend = await _open(postgres_dsn)
    job = await create(backend)
    await backend.close()
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute("INSERT INTO longjobs_schema VALUES ($1)", SCHEMA_VERSION + 1)
    await conn.close()

    with pytest.raises(SchemaVersionError, match="upgrade longjobs"):
        await _open(postgres_dsn)

    conn = await asyncpg.connect(postgres_dsn)
    assert await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job.id) == 1
    await conn.close()


async def test_an_unreachable_server_is_unavailable_not_an_error() -> None:
    backend = PostgresBackend("postgresql://nobody@127.0.0.1:1/none", Settings())

    with pytest.raises(StorageUnavailable):
        await backend.open()


def test_the_migrate_command_reports_the_version(postgres_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "longjobs.cli", "migrate", "--database-url", postgres_dsn],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"schema version {SCHEMA_VERSION}")


def test_the_migrate_command_hides_the_password_and_fails_in_one_line() -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/none"
    done = subprocess.run(
        [sys.executable, "-m", "longjobs.cli", "migrate", "--database-url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "s3cret" not in done.stderr + done.stdout


# -- several processes on one database ---------------------------------------------------------
@pytest.fixture
async def pair(postgres_dsn: str) -> AsyncIterator[tuple[PostgresBackend, PostgresBackend]]:
    ours, theirs = await _open(postgres_dsn), await _open(postgres_dsn)
    try:
        yield ours, theirs
    finally:
        await asyncio.gather(ours.close(), theirs.close())


async def test_a_submission_elsewhere_wakes_an_idle_worker_at_once(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    ours, theirs = pair
    watch = ours.watch_work([KIND])
    assert await watch.wait(0.1) is None

    await theirs.create_job(make_job())
    woken = await watch.wait(WAKE_WITHIN)
    watch.close()

    assert woken is not None
    assert len(await ours.claim_jobs(WORKER, [KIND], 10, LEASE)) == 1


async def test_a_cancel_elsewhere_reaches_the_worker_holding_the_job(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    ours, theirs = pair
    job = await start(ours)
    with ours.watch_cancel(WORKER) as watch:
        await theirs.request_cancel(TENANT, job.id)
        woken = await watch.wait(WAKE_WITHIN)

    assert woken is not None
    assert await ours.cancel_requests(WORKER) == {job.id}


async def test_events_written_elsewhere_reach_a_follower_here(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    ours, theirs = pair
    job = await start(theirs)
    with ours.subscribe_job(job.id) as subscription:
        await asyncio.sleep(0.1)
        subscription.take()
        await theirs.append_events(WORKER, [update(job, ("log", {"message": "hi"}))])

        assert await subscription.wait(WAKE_WITHIN)
        _, stale = subscription.take()

    assert stale  # told to read: the store has the event
    events = await ours.list_events(TENANT, job.id)
    assert events is not None
    assert events[-1].data == {"message": "hi"}


def test_notifications_carry_many_keys_each_under_postgresql_s_payload_limit() -> None:
    keys = {f"job:job_{i:026d}" for i in range(1000)}  # ~35 kB of keys

    sent = payloads("abcd1234", keys)

    assert len(sent) > 1
    assert all(len(p.encode()) < 8000 for p in sent)
    assert all(p.split("\n")[0] == "abcd1234" for p in sent)
    assert {key for p in sent for key in p.split("\n")[1:]} == keys
    assert payloads("abcd1234", {"work"}) == ["abcd1234\nwork"]


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.exceptions.SerializationError("could not serialize"), True),
        (asyncpg.exceptions.DiskFullError("no space left"), True),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), True),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (asyncpg.exceptions.UndefinedTableError("no such table"), False),
    ],
)
def test_errors_that_pass_by_themselves_answer_503(error: Exception, unavailable: bool) -> None:
    expected = StorageUnavailable if unavailable else StorageError
    with pytest.raises(StorageError) as caught, mapped_errors():
        raise error
    assert type(caught.value) is expected
