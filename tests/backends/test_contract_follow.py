"""Contract: a subscription collects what happens to a job between waits, and a follower built on
it (``longjobs.follow``) yields every event exactly once, in order, up to the terminal one."""

from __future__ import annotations

import asyncio

from longjobs.backends.base import Backend, Completed, Finish
from tests.backends.contract import (
    WORKER,
    assert_gap_free,
    complete,
    events_of,
    follow_all,
    start,
    update,
)

WAKE_WITHIN = 1.0


async def test_a_subscription_is_woken_by_a_report_and_tells_what_to_read(
    backend: Backend,
) -> None:
    job = await start(backend)
    with backend.subscribe_job(job.id) as subscription:
        subscription.take()
        await backend.append_events(WORKER, [update(job, ("log", {"message": "hi"}))])

        woken = await subscription.wait(WAKE_WITHIN)
        handed, stale = subscription.take()

    assert woken
    # Either the events themselves or "read the store", never nothing.
    assert stale or [e.data for e in handed] == [{"message": "hi"}]


async def test_a_subscription_keeps_what_happened_while_nobody_waited(backend: Backend) -> None:
    job = await start(backend)
    with backend.subscribe_job(job.id) as subscription:
        subscription.take()
        for i in range(3):
            await backend.append_events(WORKER, [update(job, ("log", {"i": i}))])

        assert await subscription.wait(0)  # already has something: no waiting
        handed, stale = subscription.take()
        assert not await subscription.wait(0.05)  # taken: nothing left

    assert stale or [e.data["i"] for e in handed] == [0, 1, 2]


async def test_a_quiet_subscription_times_out(backend: Backend) -> None:
    job = await start(backend)
    with backend.subscribe_job(job.id) as subscription:
        await subscription.wait(0.1)  # whatever the start left
        subscription.take()

        assert not await subscription.wait(0.05)


async def test_a_follower_sees_every_event_once_in_order_while_the_job_reports(
    backend: Backend,
) -> None:
    job = await start(backend)

    async def report() -> None:
        for i in range(60):
            await backend.append_events(WORKER, [update(job, ("log", {"i": i}))])
            if i % 7 == 0:
                await asyncio.sleep(0.005)
        await complete(backend, job, {"ok": True})

    writer = asyncio.create_task(report())
    seen = await asyncio.wait_for(follow_all(backend, job.id), 10)
    await writer

    assert_gap_free(seen)
    assert seen == await events_of(backend, job.id)
    assert seen[-1].data["status"] == "completed"


async def test_a_follower_from_a_cursor_starts_right_after_it(backend: Backend) -> None:
    job = await start(backend)
    await backend.append_events(WORKER, [update(job, *[("log", {"i": i}) for i in range(5)])])
    await complete(backend, job)

    seen = await asyncio.wait_for(follow_all(backend, job.id, after=3), 5)

    assert [e.sequence_number for e in seen] == list(range(4, len(seen) + 4))
    assert seen[-1].data["status"] == "completed"


async def test_a_report_and_the_finish_in_one_write_reach_the_follower(backend: Backend) -> None:
    job = await start(backend)

    async def finish_with_a_last_report() -> None:
        await asyncio.sleep(0.02)
        last = update(job, ("log", {"message": "last words"}))
        finish = Finish(job.id, job.attempt, Completed(b"null"), update=last)
        assert await backend.finish_jobs(WORKER, [finish]) == [True]

    writer = asyncio.create_task(finish_with_a_last_report())
    seen = await asyncio.wait_for(follow_all(backend, job.id), 5)
    await writer

    assert [e.type for e in seen[-2:]] == ["log", "status"]
    assert seen == await events_of(backend, job.id)
