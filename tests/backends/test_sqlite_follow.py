"""SQLite: followers take the events this process wrote, and those other processes wrote, from
their subscriptions, without reading them back one by one; anything unclear means a read."""

from __future__ import annotations

import asyncio

from longjobs.backends.base import Completed, Finish
from longjobs.backends.notify import MAX_HANDED
from longjobs.backends.sqlite import SQLiteBackend
from tests.backends.contract import (
    TENANT,
    WORKER,
    assert_gap_free,
    complete,
    events_of,
    follow_all,
    start,
    update,
)

WAKE_WITHIN = 1.0


async def test_reports_written_here_are_handed_to_followers_as_stored(
    sqlite_backend: SQLiteBackend,
) -> None:
    job = await start(sqlite_backend)
    with sqlite_backend.subscribe_job(job.id) as subscription:
        subscription.take()
        report = update(job, ("progress", {"progress": 0.5}), ("log", {"message": "half"}))
        await sqlite_backend.append_events(WORKER, [report])

        assert await subscription.wait(WAKE_WITHIN)
        handed, stale = subscription.take()

    assert not stale
    assert handed == (await events_of(sqlite_backend, job.id))[-2:]


async def test_a_finish_with_a_last_report_is_read_not_handed(
    sqlite_backend: SQLiteBackend,
) -> None:
    job = await start(sqlite_backend)
    with sqlite_backend.subscribe_job(job.id) as subscription:
        subscription.take()
        last = update(job, ("log", {"message": "last words"}))
        finish = Finish(job.id, job.attempt, Completed(b"null"), update=last)
        await sqlite_backend.finish_jobs(WORKER, [finish])

        assert await subscription.wait(WAKE_WITHIN)
        _, stale = subscription.take()

    # The status event was not handed over: a follower must not stop at the report.
    assert stale


async def test_reports_of_another_process_are_handed_over_once_the_position_is_known(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await start(sqlite_peer)
    with sqlite_backend.subscribe_job(job.id) as subscription:
        # A job first seen changing: its followers read for themselves, and the position is
        # learnt (let every wake-up of the writes so far arrive).
        await sqlite_peer.append_events(WORKER, [update(job, ("log", {"i": 0}))])
        assert await subscription.wait(WAKE_WITHIN)
        await asyncio.sleep(0.1)
        subscription.take()

        await sqlite_peer.append_events(WORKER, [update(job, ("log", {"i": 1}), ("log", {"i": 2}))])
        assert await subscription.wait(WAKE_WITHIN)
        handed, stale = subscription.take()

    assert not stale
    assert handed == (await events_of(sqlite_backend, job.id))[-2:]


async def test_a_deletion_by_another_process_makes_every_follower_read(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await start(sqlite_peer)
    await complete(sqlite_peer, job)
    other = await start(sqlite_peer)
    with sqlite_backend.subscribe_job(other.id) as subscription:
        await asyncio.sleep(0.1)
        subscription.take()

        assert await sqlite_peer.delete_job(TENANT, job.id)
        assert await subscription.wait(WAKE_WITHIN)
        _, stale = subscription.take()

    assert stale


async def test_a_follower_sees_every_event_another_process_writes_once_in_order(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    job = await start(sqlite_peer)

    async def report() -> None:
        for i in range(200):
            await sqlite_peer.append_events(WORKER, [update(job, ("log", {"i": i}))])
            if i % 10 == 0:
                await asyncio.sleep(0.003)
        await complete(sqlite_peer, job)

    writer = asyncio.create_task(report())
    seen = await asyncio.wait_for(follow_all(sqlite_backend, job.id), 15)
    await writer

    assert_gap_free(seen)
    assert seen == await events_of(sqlite_backend, job.id)
    assert seen[-1].data["status"] == "completed"


async def test_a_follower_that_does_not_keep_up_is_told_to_read_instead(
    sqlite_backend: SQLiteBackend,
) -> None:
    job = await start(sqlite_backend)
    with sqlite_backend.subscribe_job(job.id) as subscription:
        subscription.take()
        for _ in range(3):
            lines = [("log", {"i": i}) for i in range(600)]
            await sqlite_backend.append_events(WORKER, [update(job, *lines)])
            await asyncio.sleep(0.01)
        handed, stale = subscription.take()

    assert stale
    assert len(handed) <= MAX_HANDED
