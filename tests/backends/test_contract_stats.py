"""Contract: a tenant's queue statistics and the worker registry, on every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from longjobs.backends.base import Backend, Completed, Failed, MinuteStats, Outcome, QueueStats
from longjobs.models import Job, Status
from tests.backends.contract import (
    BOOM,
    KIND,
    LEASE,
    OTHER_KIND,
    OTHER_TENANT,
    OTHER_WORKER,
    TENANT,
    WORKER,
    claim_one,
    create,
    finish,
    get,
    start,
)

MINUTE = timedelta(minutes=1)


def minute_of(at: datetime | None) -> datetime:
    assert at is not None
    return at.replace(second=0, microsecond=0)


def minute_at(stats: QueueStats, at: datetime | None) -> MinuteStats:
    [found] = [m for m in stats.minutes if m.start == minute_of(at)]
    return found


async def ended(
    backend: Backend, outcome: Outcome, *, tenant: str = TENANT, kind: str = KIND
) -> Job:
    """A new job run to ``outcome`` (no other job may be due: a claim takes any tenant's)."""
    job = await create(backend, tenant=tenant, kind=kind)
    claimed = await claim_one(backend, kinds=[kind])
    assert claimed.id == job.id
    assert await finish(backend, claimed, outcome)
    return await get(backend, job.id, tenant)


async def cancelled(backend: Backend, *, tenant: str = TENANT) -> Job:
    job = await create(backend, tenant=tenant)
    await backend.request_cancel(tenant, job.id)
    return await get(backend, job.id, tenant)


async def workers(backend: Backend) -> int:
    return (await backend.queue_stats(TENANT)).workers


# -- counts ----------------------------------------------------------------------------------


async def test_counts_are_the_tenants_jobs_by_status_and_kind(backend: Backend) -> None:
    for _ in range(2):
        await ended(backend, Completed(b"1"))
    await ended(backend, Failed(BOOM))
    await ended(backend, Completed(b"1"), kind=OTHER_KIND)
    await ended(backend, Failed(BOOM, retry_in=60.0))  # pending again, not failed
    await ended(backend, Completed(b"1"), tenant=OTHER_TENANT)
    await cancelled(backend)
    await start(backend)
    for tenant, kind in [(TENANT, KIND), (TENANT, OTHER_KIND), (OTHER_TENANT, KIND)]:
        await create(backend, tenant=tenant, kind=kind)

    mine = await backend.queue_stats(TENANT)
    theirs = await backend.queue_stats(OTHER_TENANT)

    assert mine.counts == {
        (Status.COMPLETED, KIND): 2,
        (Status.FAILED, KIND): 1,
        (Status.CANCELLED, KIND): 1,
        (Status.RUNNING, KIND): 1,
        (Status.PENDING, KIND): 2,
        (Status.COMPLETED, OTHER_KIND): 1,
        (Status.PENDING, OTHER_KIND): 1,
    }
    assert theirs.counts == {(Status.COMPLETED, KIND): 1, (Status.PENDING, KIND): 1}
    assert (await backend.queue_stats("nobody")).counts == {}


# -- minutes ---------------------------------------------------------------------------------


async def test_minutes_cover_the_window_oldest_first_up_to_the_current_minute(
    backend: Backend,
) -> None:
    stats = await backend.queue_stats(TENANT, minutes=5)

    assert abs(stats.now - datetime.now(UTC)) < timedelta(seconds=5)
    starts = [m.start for m in stats.minutes]
    assert starts == [starts[0] + i * MINUTE for i in range(5)]
    assert starts[-1] == minute_of(stats.now)
    assert starts[-1].utcoffset() == timedelta(0)
    assert stats.minutes == [MinuteStats(s, 0, 0, 0, 0, None, None) for s in starts]
    assert (stats.counts, stats.workers) == ({}, 0)
    assert len((await backend.queue_stats(TENANT)).minutes) == 15
    assert len((await backend.queue_stats(TENANT, minutes=1)).minutes) == 1
    assert len((await backend.queue_stats(TENANT, minutes=60)).minutes) == 60


async def test_minutes_out_of_range_are_refused(backend: Backend) -> None:
    for minutes in (0, -1, 61):
        with pytest.raises(ValueError, match="minutes"):
            await backend.queue_stats(TENANT, minutes=minutes)


async def test_each_minute_counts_the_tenants_jobs_that_ended_in_it(backend: Backend) -> None:
    ends = [await ended(backend, Completed(b"1")) for _ in range(2)]
    ends += [await ended(backend, Failed(BOOM)), await cancelled(backend)]
    ends.append(await ended(backend, Completed(b"1"), kind=OTHER_KIND))
    await ended(backend, Failed(BOOM, retry_in=60.0))  # a retry is no end
    await ended(backend, Completed(b"1"), tenant=OTHER_TENANT)
    await cancelled(backend, tenant=OTHER_TENANT)

    stats = await backend.queue_stats(TENANT)

    counted = Counter(
        {
            (m.start, status): n
            for m in stats.minutes
            for status, n in [
                (Status.COMPLETED, m.completed),
                (Status.FAILED, m.failed),
                (Status.CANCELLED, m.cancelled),
            ]
            if n
        }
    )
    # Within a second of each other: one minute, or two when a minute turned meanwhile.
    assert counted == Counter((minute_of(j.finished_at), j.status) for j in ends)
    assert sum(counted.values()) == 5
    assert stats.minutes[-1].start == minute_of(stats.now)
    assert stats.minutes[-1].start - minute_of(ends[-1].finished_at) in (timedelta(0), MINUTE)


async def test_each_minute_counts_the_jobs_started_in_it_and_their_queue_wait(
    backend: Backend,
) -> None:
    waiting = await create(backend)
    delayed = await create(backend, delay_seconds=0.2)
    await create(backend, tenant=OTHER_TENANT)
    await asyncio.sleep(0.35)

    claimed = {j.id: j for j in await backend.claim_jobs(WORKER, [KIND], 10, LEASE)}
    stats = await backend.queue_stats(TENANT)

    assert len(claimed) == 3
    waits = {
        job_id: (job.started_at - job.run_at).total_seconds()
        for job_id, job in claimed.items()
        if job.tenant == TENANT and job.started_at is not None and job.run_at is not None
    }
    # The wait counts from when a job became due: for a delayed one, not from its creation.
    assert 0 < waits[delayed.id] < waits[waiting.id] - 0.1
    minute = minute_at(stats, claimed[waiting.id].started_at)
    assert minute.started == 2
    assert minute.wait_avg_seconds == pytest.approx(sum(waits.values()) / 2, abs=0.005)
    assert minute.wait_max_seconds == pytest.approx(waits[waiting.id], abs=0.005)
    assert sum(m.started for m in stats.minutes) == 2
    quiet = {(m.started, m.wait_avg_seconds, m.wait_max_seconds) for m in stats.minutes[:-2]}
    assert quiet == {(0, None, None)}


# -- the worker registry ---------------------------------------------------------------------


async def test_workers_are_the_registrations_of_every_tenant_until_gone(backend: Backend) -> None:
    await backend.worker_seen(WORKER, ttl_seconds=30.0)
    await backend.worker_seen(OTHER_WORKER, ttl_seconds=30.0)
    await backend.worker_seen(WORKER, ttl_seconds=30.0)  # again: still one registration

    assert await workers(backend) == 2
    assert (await backend.queue_stats(OTHER_TENANT)).workers == 2  # workers serve every tenant

    await backend.worker_gone(OTHER_WORKER)
    await backend.worker_gone("never-seen")

    assert await workers(backend) == 1


async def test_a_registration_runs_out_after_its_ttl_unless_renewed(backend: Backend) -> None:
    await backend.worker_seen(WORKER, ttl_seconds=0.4)
    await backend.worker_seen(OTHER_WORKER, ttl_seconds=0.4)
    assert await workers(backend) == 2
    await backend.worker_seen(OTHER_WORKER, ttl_seconds=30.0)

    await asyncio.sleep(0.5)

    assert await workers(backend) == 1
    await backend.worker_seen(WORKER, ttl_seconds=30.0)  # seen again after running out
    assert await workers(backend) == 2
