"""Contract: cancelling and deleting jobs, tenant-scoped, on every backend."""

from __future__ import annotations

from longjobs.backends.base import Backend
from longjobs.models import Status
from tests.backends.contract import (
    KIND,
    LEASE,
    OTHER_TENANT,
    TENANT,
    WORKER,
    complete,
    create,
    events_of,
    get,
    last_event,
    make_job,
    start,
    status_trail,
)

# -- request_cancel --------------------------------------------------------------------------


async def test_cancelling_a_pending_job_cancels_it_at_once(backend: Backend) -> None:
    job = await create(backend)

    cancelled = await backend.request_cancel(TENANT, job.id)

    assert cancelled is not None
    assert (cancelled.id, cancelled.status) == (job.id, Status.CANCELLED)
    stored = await get(backend, job.id)
    assert stored.status is Status.CANCELLED
    assert stored.finished_at is not None
    assert (await last_event(backend, job.id)).data == {"status": "cancelled", "attempt": 0}
    assert await backend.claim_jobs(WORKER, [KIND], 10, LEASE) == []


async def test_cancelling_a_running_job_asks_its_worker(backend: Backend) -> None:
    job = await start(backend)

    asked = await backend.request_cancel(TENANT, job.id)

    assert asked is not None
    assert (asked.status, asked.cancel_requested) == (Status.RUNNING, True)
    assert (await get(backend, job.id)).cancel_requested
    last = await last_event(backend, job.id)
    assert (last.sequence_number, last.type) == (2, "status")
    assert last.data == {"status": "running", "attempt": 1, "detail": {"cancel_requested": True}}
    assert await backend.cancel_requests(WORKER) == {job.id}


async def test_asking_a_running_job_twice_records_one_request(backend: Backend) -> None:
    job = await start(backend)

    await backend.request_cancel(TENANT, job.id)
    again = await backend.request_cancel(TENANT, job.id)

    assert again is not None
    assert again.cancel_requested
    assert len(await events_of(backend, job.id)) == 3


async def test_cancelling_a_terminal_job_changes_nothing(backend: Backend) -> None:
    job = await start(backend)
    await complete(backend, job, "done")
    before = await get(backend, job.id)

    after = await backend.request_cancel(TENANT, job.id)

    assert after is not None
    assert (after.status, after.cancel_requested) == (Status.COMPLETED, False)
    assert await get(backend, job.id) == before
    assert [s for s, _ in await status_trail(backend, job.id)] == [
        "pending",
        "running",
        "completed",
    ]


async def test_cancelling_another_tenants_job_is_not_found(backend: Backend) -> None:
    job = await create(backend)

    assert await backend.request_cancel(OTHER_TENANT, job.id) is None
    assert await backend.request_cancel(TENANT, "job_" + "0" * 32) is None
    assert (await get(backend, job.id)).status is Status.PENDING
    assert len(await events_of(backend, job.id)) == 1


async def test_cancel_requests_lists_only_that_workers_asked_jobs(backend: Backend) -> None:
    asked = await start(backend)
    await start(backend)
    assert await backend.cancel_requests(WORKER) == frozenset()

    await backend.request_cancel(TENANT, asked.id)

    assert await backend.cancel_requests(WORKER) == {asked.id}
    assert await backend.cancel_requests("worker-9") == frozenset()


# -- delete_job ------------------------------------------------------------------------------


async def test_delete_removes_the_job_its_events_and_its_result(backend: Backend) -> None:
    job = await start(backend)
    await complete(backend, job, "done")
    kept = await create(backend)

    assert await backend.delete_job(TENANT, job.id)

    assert await backend.get_job(TENANT, job.id) is None
    assert await backend.list_events(TENANT, job.id) is None
    assert await backend.get_result(TENANT, job.id) is None
    assert [j.id for j in (await backend.list_jobs(TENANT)).data] == [kept.id]
    assert not await backend.delete_job(TENANT, job.id)


async def test_deleting_another_tenants_job_is_refused(backend: Backend) -> None:
    job = await create(backend)

    assert not await backend.delete_job(OTHER_TENANT, job.id)
    assert (await get(backend, job.id)).status is Status.PENDING
    assert len(await events_of(backend, job.id)) == 1


async def test_an_idempotency_key_is_free_again_once_its_job_is_deleted(
    backend: Backend,
) -> None:
    job = await create(backend, idempotency_key="k1", request_hash="h1")
    await backend.delete_job(TENANT, job.id)

    again, created = await backend.create_job(make_job(idempotency_key="k1", request_hash="h2"))

    assert created
    assert again.id != job.id
