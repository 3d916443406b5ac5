"""Contract: what a lease holder reports (append_events, heartbeat), and what happens to leases
that lapse (sweep) or are given back (release_jobs), on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from longjobs.backends.base import Backend, Completed, Sweep
from longjobs.models import Status, Usage
from tests.backends.contract import (
    BOOM,
    KIND,
    LEASE,
    OTHER_WORKER,
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    TENANT,
    WORKER,
    assert_gap_free,
    claim_one,
    complete,
    create,
    events_of,
    fail_for_retry,
    finish,
    get,
    last_event,
    start,
    status_trail,
    update,
)

# -- append_events ---------------------------------------------------------------------------


async def test_event_numbers_are_gap_free_across_event_types(backend: Backend) -> None:
    job = await start(backend)

    lost_first = await backend.append_events(
        WORKER,
        [update(job, ("progress", {"progress": 0.1}), ("log", {"message": "page 1"}))],
    )
    lost_second = await backend.append_events(
        WORKER,
        [
            update(
                job,
                ("output", {"delta": "The "}),
                ("log", {"message": "page 2"}),
                ("usage", {"input_tokens": 5, "output_tokens": 1}),
            )
        ],
    )
    await complete(backend, job, "ok")

    assert lost_first == lost_second == set()
    events = await events_of(backend, job.id)
    assert [e.type for e in events] == [
        "status",
        "status",
        "progress",
        "log",
        "output",
        "log",
        "usage",
        "status",
    ]
    assert_gap_free(events)
    assert events[5].data == {"message": "page 2"}
    assert (await get(backend, job.id)).last_sequence_number == 7


async def test_updates_for_many_jobs_in_one_call_each_keep_their_own_numbers(
    backend: Backend,
) -> None:
    first = await start(backend)
    second = await start(backend)

    lost = await backend.append_events(
        WORKER,
        [
            update(first, ("log", {"message": "a"})),
            update(second, ("log", {"message": "b"}), ("log", {"message": "c"})),
            update(first, ("log", {"message": "d"})),
        ],
    )

    assert lost == set()
    assert [(e.sequence_number, e.data) for e in (await events_of(backend, first.id))[2:]] == [
        (2, {"message": "a"}),
        (3, {"message": "d"}),
    ]
    assert [e.sequence_number for e in await events_of(backend, second.id)] == [0, 1, 2, 3]


async def test_a_progress_update_sets_progress_stage_message_and_eta(backend: Backend) -> None:
    job = await start(backend)

    await backend.append_events(
        WORKER,
        [update(job, progress=0.4, stage="reading", message="page 4 of 10", eta_seconds=12.5)],
    )

    stored = await get(backend, job.id)
    assert (stored.progress, stored.stage, stored.message, stored.eta_seconds) == (
        0.4,
        "reading",
        "page 4 of 10",
        12.5,
    )
    assert len(await events_of(backend, job.id)) == 2  # columns only: no event was sent


async def test_usage_updates_carry_running_totals(backend: Backend) -> None:
    job = await start(backend)

    await backend.append_events(WORKER, [update(job, input_tokens=100, output_tokens=20)])
    await backend.append_events(WORKER, [update(job, input_tokens=150, output_tokens=45)])

    assert (await get(backend, job.id)).usage == Usage(input_tokens=150, output_tokens=45)


async def test_a_checkpoint_is_handed_to_the_next_attempt(backend: Backend) -> None:
    job = await start(backend, max_attempts=3)
    await backend.append_events(
        WORKER, [update(job, checkpoint={"pages_done": 3}, has_checkpoint=True)]
    )
    await backend.append_events(WORKER, [update(job, progress=0.3)])  # no checkpoint: kept

    await fail_for_retry(backend, job)
    again = await claim_one(backend)

    assert again.attempt == 2
    assert again.checkpoint == {"pages_done": 3}
    assert (await get(backend, job.id)).checkpoint == {"pages_done": 3}


async def test_an_update_from_another_worker_is_lost_and_appends_nothing(
    backend: Backend,
) -> None:
    job = await start(backend)

    lost = await backend.append_events(
        OTHER_WORKER, [update(job, ("log", {"message": "zombie"}), progress=0.9)]
    )

    assert lost == {job.id}
    assert len(await events_of(backend, job.id)) == 2
    assert (await get(backend, job.id)).progress == 0.0


async def test_an_update_for_a_stale_attempt_is_lost(backend: Backend) -> None:
    first = await start(backend, max_attempts=3)
    await fail_for_retry(backend, first)
    await claim_one(backend)
    before = await events_of(backend, first.id)

    lost = await backend.append_events(
        WORKER, [update(first, ("log", {"message": "from attempt 1"}), progress=0.7)]
    )

    assert lost == {first.id}
    assert await events_of(backend, first.id) == before
    assert (await get(backend, first.id)).progress == 0.0


async def test_only_the_fenced_updates_of_a_batch_are_lost(backend: Backend) -> None:
    mine = await start(backend)
    finished = await start(backend)
    await complete(backend, finished, "done")

    lost = await backend.append_events(
        WORKER,
        [update(mine, ("log", {"message": "kept"})), update(finished, ("log", {"m": "late"}))],
    )

    assert lost == {finished.id}
    assert (await last_event(backend, mine.id)).data == {"message": "kept"}
    assert (await last_event(backend, finished.id)).type == "status"


# -- heartbeat -------------------------------------------------------------------------------


async def test_heartbeat_reports_the_leases_the_worker_holds(backend: Backend) -> None:
    first = await start(backend)
    second = await start(backend)
    await create(backend)
    theirs = await claim_one(backend, OTHER_WORKER)

    beat = await backend.heartbeat(WORKER, [first.id, second.id, theirs.id], LEASE)

    assert beat.held == {first.id, second.id}
    assert beat.cancel_requested == frozenset()
    assert (await backend.heartbeat(OTHER_WORKER, [theirs.id], LEASE)).held == {theirs.id}


async def test_heartbeat_extends_only_the_leases_it_names(backend: Backend) -> None:
    kept = await start(backend, lease=0.3)
    dropped = await start(backend, lease=0.3)

    await backend.heartbeat(WORKER, [kept.id], LEASE)
    await asyncio.sleep(0.4)
    await backend.sweep()

    assert (await get(backend, kept.id)).status is Status.RUNNING
    assert (await get(backend, dropped.id)).attempt == 1
    assert (await get(backend, dropped.id)).status is not Status.RUNNING


async def test_heartbeat_extends_the_lease(backend: Backend) -> None:
    job = await start(backend, lease=0.3)

    await backend.heartbeat(WORKER, [job.id], LEASE)
    await asyncio.sleep(0.4)
    swept = await backend.sweep()

    assert swept.requeued == 0
    assert (await get(backend, job.id)).status is Status.RUNNING
    assert (await backend.heartbeat(WORKER, [job.id], LEASE)).held == {job.id}


async def test_heartbeat_reports_cancel_requests(backend: Backend) -> None:
    job = await start(backend)
    other = await start(backend)

    await backend.request_cancel(TENANT, job.id)
    beat = await backend.heartbeat(WORKER, [job.id, other.id], LEASE)

    assert beat.held == {job.id, other.id}
    assert beat.cancel_requested == {job.id}


async def test_a_job_reclaimed_by_the_sweeper_is_no_longer_held(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=2)
    await asyncio.sleep(PAST_SHORT_LEASE)

    await backend.sweep()
    beat = await backend.heartbeat(WORKER, [job.id], LEASE)

    assert job.id not in beat.held
    assert beat.held == frozenset()


# -- sweep -----------------------------------------------------------------------------------


async def test_sweep_requeues_a_job_whose_lease_expired(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=3)
    await asyncio.sleep(PAST_SHORT_LEASE)

    swept = await backend.sweep()

    assert swept == Sweep(requeued=1)
    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt, stored.lease_owner) == (Status.PENDING, 1, None)
    assert (await last_event(backend, job.id)).data == {
        "status": "pending",
        "attempt": 1,
        "detail": {"reason": "lease_expired"},
    }


async def test_a_requeued_job_counts_the_lost_attempt(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=3)
    await asyncio.sleep(PAST_SHORT_LEASE)
    await backend.sweep()

    again = await claim_one(backend, OTHER_WORKER)

    assert (again.id, again.attempt, again.lease_owner) == (job.id, 2, OTHER_WORKER)


async def test_the_worker_that_lost_its_lease_cannot_write_any_more(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=3)
    await asyncio.sleep(PAST_SHORT_LEASE)
    await backend.sweep()
    again = await claim_one(backend, OTHER_WORKER)

    stale = await complete(backend, job, "zombie result")
    lost = await backend.append_events(WORKER, [update(job, ("log", {"message": "zombie"}))])
    current = await finish(backend, again, Completed(b'"real result"'), worker=OTHER_WORKER)

    assert (stale, lost, current) == (False, {job.id}, True)
    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt, stored.result) == (
        Status.COMPLETED,
        2,
        "real result",
    )
    assert not any(e.data.get("message") == "zombie" for e in await events_of(backend, job.id))


async def test_sweep_fails_a_job_that_used_its_last_attempt(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=2)
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert (await backend.sweep()).requeued == 1
    await claim_one(backend, lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)

    swept = await backend.sweep()

    assert swept == Sweep(failed=1)
    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt) == (Status.FAILED, 2)
    assert stored.error is not None
    assert stored.error.type == "attempts_exhausted"
    assert stored.finished_at is not None
    last = await last_event(backend, job.id)
    assert (last.data["status"], last.data["attempt"]) == ("failed", 2)
    assert last.data["detail"]["reason"] == "lease_expired"
    assert last.data["detail"]["error"]["type"] == "attempts_exhausted"
    assert await backend.claim_jobs(WORKER, [KIND], 10, LEASE) == []


async def test_sweep_cancels_an_expired_job_that_was_asked_to_cancel(backend: Backend) -> None:
    job = await start(backend, lease=SHORT_LEASE, max_attempts=3)
    await backend.request_cancel(TENANT, job.id)
    await asyncio.sleep(PAST_SHORT_LEASE)

    swept = await backend.sweep()

    assert swept == Sweep(cancelled=1)
    stored = await get(backend, job.id)
    assert (stored.status, stored.error) == (Status.CANCELLED, None)
    assert (await last_event(backend, job.id)).data == {
        "status": "cancelled",
        "attempt": 1,
        "detail": {"reason": "lease_expired"},
    }


async def test_sweep_leaves_live_leases_alone(backend: Backend) -> None:
    job = await start(backend)

    assert await backend.sweep() == Sweep()
    assert (await get(backend, job.id)).status is Status.RUNNING


async def test_sweep_drops_expired_results(backend: Backend, backend_name: str) -> None:
    job = await start(backend, result_ttl_seconds=0.05)
    kept = await start(backend, result_ttl_seconds=3600.0)
    await complete(backend, job, "short-lived")
    await complete(backend, kept, "long-lived")
    assert await backend.get_result(TENANT, job.id) is not None
    await asyncio.sleep(0.15)

    swept = await backend.sweep()

    assert swept == Sweep(results_expired=1)
    stored = await get(backend, job.id)
    assert (stored.status, stored.result, stored.result_size) == (Status.COMPLETED, None, None)
    assert stored.result_expired
    assert await backend.get_result(TENANT, job.id) is None
    assert await backend.get_result(TENANT, kept.id) is not None
    assert await backend.sweep() == Sweep()


async def test_an_expired_result_is_not_served_even_before_the_sweep(backend: Backend) -> None:
    job = await start(backend, result_ttl_seconds=0.05)
    await complete(backend, job, "short-lived")
    await asyncio.sleep(0.15)

    assert await backend.get_result(TENANT, job.id) is None


# -- release_jobs ----------------------------------------------------------------------------


async def test_release_returns_the_job_without_counting_the_attempt(backend: Backend) -> None:
    job = await start(backend, max_attempts=1)

    released = await backend.release_jobs(WORKER, [job.id])

    assert released == 1
    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt, stored.lease_owner) == (Status.PENDING, 0, None)
    assert (await last_event(backend, job.id)).data == {
        "status": "pending",
        "attempt": 0,
        "detail": {"reason": "released"},
    }
    again = await claim_one(backend, OTHER_WORKER)
    assert (again.id, again.attempt) == (job.id, 1)
    assert await status_trail(backend, job.id) == [
        ("pending", 0),
        ("running", 1),
        ("pending", 0),
        ("running", 1),
    ]


async def test_release_ignores_jobs_the_worker_does_not_hold(backend: Backend) -> None:
    job = await start(backend)

    released = await backend.release_jobs(OTHER_WORKER, [job.id, "job_" + "0" * 32])

    assert released == 0
    assert (await get(backend, job.id)).status is Status.RUNNING
    assert len(await events_of(backend, job.id)) == 2


# -- stale errors after a retry --------------------------------------------------------------


async def _cancel_while_waiting_for_retry(backend: Backend) -> str:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job, retry_in=60.0)
    await backend.request_cancel(TENANT, job.id)
    return job.id


async def _release_after_retry(backend: Backend) -> str:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job)
    await claim_one(backend)
    await backend.release_jobs(WORKER, [job.id])
    return job.id


async def _lease_expiry_after_retry(backend: Backend) -> str:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job)
    await claim_one(backend, lease=SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)
    await backend.sweep()
    return job.id


async def _completion_after_retry(backend: Backend) -> str:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job)
    await complete(backend, await claim_one(backend), "ok")
    return job.id


@pytest.mark.parametrize(
    "scenario",
    [
        _cancel_while_waiting_for_retry,
        _release_after_retry,
        _lease_expiry_after_retry,
        _completion_after_retry,
    ],
    ids=["cancelled", "released", "lease_expired", "completed"],
)
async def test_status_events_after_a_retry_carry_no_stale_error(
    backend: Backend,
    backend_name: str,
    scenario: Callable[[Backend], Awaitable[str]],
) -> None:
    job_id = await scenario(backend)

    last = await last_event(backend, job_id)

    assert last.type == "status"
    assert "error" not in last.data.get("detail", {}), last.data
    assert BOOM.type not in str(last.data)
