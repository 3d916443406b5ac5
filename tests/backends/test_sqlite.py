"""What only the SQLite backend promises: its file, its URL, group commit, many processes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longjobs.backends.base import Completed, Finish
from longjobs.backends.sqlite import SCHEMA_VERSION, SQLiteBackend, parse_sqlite_url
from longjobs.backends.sqlite_db import Tx
from longjobs.errors import (
    ConfigurationError,
    IdempotencyConflict,
    SchemaVersionError,
    StorageError,
)
from longjobs.models import Status
from longjobs.settings import Settings
from tests.backends.contract import (
    KIND,
    LEASE,
    OTHER_WORKER,
    TENANT,
    WORKER,
    create,
    events_of,
    get,
    make_job,
    sqlite_url,
    start,
    update,
)

WAKE_WITHIN = 1.0


def _query(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


# -- the file --------------------------------------------------------------------------------


async def test_a_newer_schema_version_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    backend = SQLiteBackend(sqlite_url(path), Settings())

    with pytest.raises(SchemaVersionError, match="99"):
        await backend.open()

    assert _query(str(path), "PRAGMA user_version") == [(99,)]


async def test_a_version_2_file_gains_the_change_feed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    old = SQLiteBackend(sqlite_url(path), Settings())
    await old.open()
    job = await create(old)
    await old.close()
    conn = sqlite3.connect(path)  # back to what version 2 wrote
    conn.executescript(
        "DROP INDEX jobs_change; ALTER TABLE jobs DROP COLUMN change; PRAGMA user_version=2;"
    )
    conn.close()

    backend = SQLiteBackend(sqlite_url(path), Settings())
    await backend.open()
    try:
        _, head = await backend.changed_jobs(TENANT, None)
        await backend.request_cancel(TENANT, job.id)
        changes, _ = await backend.changed_jobs(TENANT, head)
        assert [(c.job.id, c.job.status) for c in changes] == [(job.id, Status.CANCELLED)]
    finally:
        await backend.close()
    assert _query(str(path), "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_3_file_gains_webhooks_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    old = SQLiteBackend(sqlite_url(path), Settings())
    await old.open()
    job = await create(old)
    await old.close()
    conn = sqlite3.connect(path)  # back to what version 3 wrote
    conn.executescript(
        "DROP TABLE webhook_endpoints; DROP TABLE workers;"
        " DROP TABLE webhook_outbox; DROP TABLE webhook_deliveries;"
        " ALTER TABLE jobs DROP COLUMN webhook_url; PRAGMA user_version=3;"
    )
    conn.close()

    backend = SQLiteBackend(sqlite_url(path), Settings())
    await backend.open()
    try:
        assert (await backend.get_job(TENANT, job.id)) == job
        with_url = await create(backend, webhook_url="https://example.com/hook")
        await backend.request_cancel(TENANT, with_url.id)
        claimed = await backend.claim_deliveries("owner", 10, 30.0)
        assert [(d.job_id, d.type) for d in claimed] == [(with_url.id, "job.cancelled")]
    finally:
        await backend.close()
    assert _query(str(path), "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_version_4_file_gains_the_worker_registry_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    old = SQLiteBackend(sqlite_url(path), Settings())
    await old.open()
    job = await create(old)
    await old.close()
    conn = sqlite3.connect(path)  # back to what version 4 wrote
    conn.executescript("DROP TABLE workers; PRAGMA user_version=4;")
    conn.close()

    backend = SQLiteBackend(sqlite_url(path), Settings())
    await backend.open()
    try:
        await backend.worker_seen(WORKER, ttl_seconds=30.0)
        stats = await backend.queue_stats(TENANT)
        assert (stats.workers, stats.counts) == (1, {(Status.PENDING, job.kind): 1})
    finally:
        await backend.close()
    assert SCHEMA_VERSION == 5
    assert _query(str(path), "PRAGMA user_version") == [(5,)]


async def test_a_worker_seen_drops_the_registrations_that_ran_out(
    sqlite_backend: SQLiteBackend,
) -> None:
    await sqlite_backend.worker_seen(WORKER, ttl_seconds=0.05)
    await sqlite_backend.worker_seen("worker-3", ttl_seconds=30.0)
    await asyncio.sleep(0.1)

    await sqlite_backend.worker_seen(OTHER_WORKER, ttl_seconds=30.0)

    rows = _query(sqlite_backend.path, "SELECT id FROM workers ORDER BY id")
    assert rows == [(OTHER_WORKER,), ("worker-3",)]


async def test_open_records_the_schema_version(sqlite_backend: SQLiteBackend) -> None:
    assert _query(sqlite_backend.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_the_file_is_in_wal_mode(sqlite_backend: SQLiteBackend) -> None:
    await create(sqlite_backend)

    assert _query(sqlite_backend.path, "PRAGMA journal_mode") == [("wal",)]


async def test_jobs_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "jobs.db")
    first = SQLiteBackend(url, Settings())
    await first.open()
    job = await start(first)
    await first.append_events(WORKER, [update(job, ("log", {"message": "kept"}))])
    await first.close()

    second = SQLiteBackend(url, Settings())
    await second.open()
    try:
        stored = await get(second, job.id)
        events = await events_of(second, job.id)
    finally:
        await second.close()

    assert (stored.status, stored.attempt, stored.lease_owner) == (Status.RUNNING, 1, WORKER)
    assert [e.type for e in events] == ["status", "status", "log"]


async def test_close_commits_writes_already_queued(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "jobs.db")
    backend = SQLiteBackend(url, Settings())
    await backend.open()
    news = [make_job() for _ in range(20)]
    creates = [asyncio.create_task(backend.create_job(n)) for n in news]
    await asyncio.sleep(0)  # every create is queued to the writer

    await backend.close()

    assert all(created for _, created in await asyncio.gather(*creates))
    assert _query(str(tmp_path / "jobs.db"), "SELECT count(*) FROM jobs") == [(20,)]


# -- the URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///jobs.db", ("jobs.db", "normal")),
        ("sqlite:///data/jobs.db", ("data/jobs.db", "normal")),
        ("sqlite:////var/lib/longjobs/jobs.db", ("/var/lib/longjobs/jobs.db", "normal")),
        ("sqlite:///jobs.db?synchronous=full", ("jobs.db", "full")),
        ("sqlite:////tmp/jobs.db?synchronous=FULL", ("/tmp/jobs.db", "full")),
        ("sqlite:///jobs.db?synchronous=off", ("jobs.db", "off")),
        ("sqlite:///jobs.db?synchronous=extra", ("jobs.db", "extra")),
    ],
)
def test_parse_sqlite_url_reads_path_and_synchronous(url: str, expected: tuple[str, str]) -> None:
    assert parse_sqlite_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///jobs.db?synchronous=sometimes",
        "sqlite://host/jobs.db",
        "sqlite:///",
        "sqlite://",
    ],
)
def test_parse_sqlite_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_sqlite_url(url)


# -- group commit ----------------------------------------------------------------------------


def _hold_the_writer(backend: SQLiteBackend, seconds: float) -> asyncio.Future[None]:
    """Keep the writer thread busy so the next writes queue up into one batch."""
    return backend.writer.submit(lambda tx: time.sleep(seconds), inline=False)


async def test_a_failing_write_does_not_undo_the_rest_of_its_batch(
    sqlite_backend: SQLiteBackend,
) -> None:
    await create(sqlite_backend, idempotency_key="k1", request_hash="h1")
    before, after = make_job(), make_job()
    busy = _hold_the_writer(sqlite_backend, 0.2)

    results = await asyncio.gather(
        sqlite_backend.create_job(before),
        sqlite_backend.create_job(make_job(idempotency_key="k1", request_hash="other")),
        sqlite_backend.create_job(after),
        return_exceptions=True,
    )
    await busy

    first, conflict, last = results
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(first, tuple)
    assert isinstance(last, tuple)
    assert first[0].created_at == last[0].created_at  # one transaction: one store clock
    rows = _query(sqlite_backend.path, "SELECT id FROM jobs")
    assert {before.id, after.id} <= {r[0] for r in rows}
    assert len(rows) == 3
    for job_id in (before.id, after.id):
        assert [e.type for e in await events_of(sqlite_backend, job_id)] == ["status"]


async def test_a_write_that_raises_midway_is_rolled_back_alone(
    sqlite_backend: SQLiteBackend,
) -> None:
    job = await start(sqlite_backend)
    busy = _hold_the_writer(sqlite_backend, 0.2)

    def half_done(tx: Tx) -> None:
        tx.conn.execute("UPDATE jobs SET progress = 0.99 WHERE id = ?", (job.id,))
        raise RuntimeError("changed my mind")

    broken = sqlite_backend.writer.submit(half_done)
    reported = sqlite_backend.append_events(WORKER, [update(job, ("log", {"message": "kept"}))])
    results = await asyncio.gather(broken, reported, return_exceptions=True)
    await busy

    assert isinstance(results[0], RuntimeError)
    assert results[1] == set()
    assert (await get(sqlite_backend, job.id)).progress == 0.0
    events = await events_of(sqlite_backend, job.id)
    assert [(e.sequence_number, e.type) for e in events] == [
        (0, "status"),
        (1, "status"),
        (2, "log"),
    ]


async def test_a_thousand_concurrent_creates_all_commit(sqlite_backend: SQLiteBackend) -> None:
    news = [make_job(input={"n": n}) for n in range(1000)]

    results = await asyncio.gather(*(sqlite_backend.create_job(n) for n in news))

    assert all(created for _, created in results)
    assert len({job.id for job, _ in results}) == 1000
    path = sqlite_backend.path
    assert _query(path, "SELECT count(*) FROM jobs") == [(1000,)]
    # (job, seq) is the events key: 1,000 rows with seq 0 are one event 0 per job.
    assert _query(path, "SELECT count(*) FROM events WHERE seq = 0 AND type = 'status'") == [
        (1000,)
    ]


# -- two processes on one file ---------------------------------------------------------------


async def test_two_instances_writing_at_once_never_see_a_locked_database(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    ours = [sqlite_backend.create_job(make_job()) for _ in range(500)]
    theirs = [sqlite_peer.create_job(make_job()) for _ in range(500)]

    results = await asyncio.gather(*ours, *theirs, return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert _query(sqlite_backend.path, "SELECT count(*) FROM jobs") == [(1000,)]


async def test_two_instances_claiming_at_once_never_share_a_job(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    news = [make_job() for _ in range(60)]
    await sqlite_backend.create_jobs(news)

    async def drain(backend: SQLiteBackend, worker: str) -> list[str]:
        taken: list[str] = []
        while claimed := await backend.claim_jobs(worker, [KIND], 4, LEASE):
            taken += [j.id for j in claimed]
        return taken

    ours, theirs = await asyncio.gather(
        drain(sqlite_backend, WORKER), drain(sqlite_peer, OTHER_WORKER)
    )

    assert sorted(ours + theirs) == sorted(n.id for n in news)
    assert _query(sqlite_backend.path, "SELECT count(*) FROM events WHERE seq = 1") == [(60,)]


async def test_a_job_created_by_one_instance_is_read_by_the_other(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await create(sqlite_backend)

    seen = await get(sqlite_peer, job.id)

    assert (seen.id, seen.status) == (job.id, Status.PENDING)


async def test_a_change_through_another_instance_wakes_a_job_watch(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await start(sqlite_peer)
    with sqlite_backend.watch_job(job.id) as watch:
        await watch.wait(0.2)  # absorb wake-ups for writes made before the watch existed
        watch.rearm()
        assert await watch.wait(0.1) is None

        await sqlite_peer.append_events(WORKER, [update(job, ("log", {"message": "hi"}))])
        woken = await watch.wait(WAKE_WITHIN)

    assert woken == "external"


async def test_a_job_created_through_another_instance_wakes_a_work_watch(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    watch = sqlite_backend.watch_work([KIND])
    assert await watch.wait(0.1) is None

    await sqlite_peer.create_job(make_job())
    woken = await watch.wait(WAKE_WITHIN)
    watch.close()

    assert woken == "external"
    assert len(await sqlite_backend.claim_jobs(WORKER, [KIND], 10, LEASE)) == 1


async def test_a_cancel_through_another_instance_wakes_a_cancel_watch(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await start(sqlite_backend)
    with sqlite_backend.watch_cancel(WORKER) as watch:
        await watch.wait(0.2)
        watch.rearm()

        await sqlite_peer.request_cancel(TENANT, job.id)
        woken = await watch.wait(WAKE_WITHIN)

    assert woken == "external"
    assert await sqlite_backend.cancel_requests(WORKER) == {job.id}


def test_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Workers started together on a database that does not exist yet (each switching it to
    WAL and creating the schema) take turns instead of failing with "database is locked"."""
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        code = (
            "import asyncio\nfrom longjobs import App\n"
            f"app = App({url!r})\n"
            "async def main() -> None:\n    async with app:\n        pass\n"
            "asyncio.run(main())\n"
        )
        processes = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0, 0], errors


async def test_a_result_removed_while_it_streams_ends_with_a_storage_error(
    sqlite_backend: SQLiteBackend,
) -> None:
    job = await start(sqlite_backend)
    body = b"z" * (600 * 1024)
    [done] = await sqlite_backend.finish_jobs(
        WORKER, [Finish(job.id, job.attempt, Completed(body, "application/octet-stream"))]
    )
    assert done
    stream = await sqlite_backend.stream_result(TENANT, job.id, chunk_size=256 * 1024)
    assert stream is not None
    first = await anext(stream.chunks)
    assert await sqlite_backend.delete_job(TENANT, job.id)

    with pytest.raises(StorageError, match="went away"):
        await anext(stream.chunks)
    assert len(first) == 256 * 1024


@pytest.mark.parametrize(
    ("url", "expected"),
    [("sqlite:///a.db", 30.0), ("sqlite:///a.db?lock_timeout=2.5", 2.5),
     ("sqlite:///a.db?synchronous=full&lock_timeout=1", 1.0)],
)  # fmt: skip
def test_the_lock_timeout_comes_from_the_url(url: str, expected: float) -> None:
    assert SQLiteBackend(url, Settings()).lock_timeout == expected


@pytest.mark.parametrize("value", ["0", "-1", "soon", "4000"])
def test_a_bad_lock_timeout_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="lock_timeout"):
        SQLiteBackend(f"sqlite:///a.db?lock_timeout={value}", Settings())
