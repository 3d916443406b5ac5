"""Contract: creating, claiming and finishing jobs, on every backend."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime

import pytest

from longjobs.backends.base import Backend, Cancelled, Completed, Failed, Finish, ResultStream
from longjobs.errors import IdempotencyConflict
from longjobs.models import JobError, Status, Usage
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
    complete,
    create,
    events_of,
    fail_for_retry,
    finish,
    get,
    last_event,
    make_job,
    start,
    status_trail,
    update,
)

# -- create ----------------------------------------------------------------------------------


async def test_create_stores_a_pending_job_with_status_event_zero(backend: Backend) -> None:
    new = make_job(priority=3, max_attempts=4, metadata={"team": "search"}, timeout_seconds=9.0)

    job, created = await backend.create_job(new)

    assert created
    assert (job.id, job.status, job.attempt, job.last_sequence_number) == (
        new.id,
        Status.PENDING,
        0,
        0,
    )
    stored = await get(backend, new.id)
    assert stored.status is Status.PENDING
    assert stored.input == {"text": "the quick brown fox"}
    assert (stored.priority, stored.max_attempts, stored.timeout_seconds) == (3, 4, 9.0)
    assert stored.metadata == {"team": "search"}
    assert stored.created_at.tzinfo is not None
    [event] = await events_of(backend, new.id)
    assert (event.job_id, event.sequence_number, event.type) == (new.id, 0, "status")
    assert event.data == {"status": "pending", "attempt": 0}


async def test_get_job_is_none_for_another_tenant_or_a_missing_id(backend: Backend) -> None:
    job = await create(backend)

    assert await backend.get_job(OTHER_TENANT, job.id) is None
    assert await backend.get_job(TENANT, "job_" + "0" * 32) is None


async def test_create_jobs_inserts_every_job_with_its_event_zero(backend: Backend) -> None:
    news = [make_job(input={"n": n}) for n in range(5)]

    jobs = await backend.create_jobs(news)

    assert [j.id for j in jobs] == [n.id for n in news]
    for new in news:
        stored = await get(backend, new.id)
        assert (stored.status, stored.input) == (Status.PENDING, new.input)
        assert await status_trail(backend, new.id) == [("pending", 0)]


async def test_same_idempotency_key_and_hash_returns_the_same_job(backend: Backend) -> None:
    first, created = await backend.create_job(make_job(idempotency_key="k1", request_hash="h1"))

    again, created_again = await backend.create_job(
        make_job(idempotency_key="k1", request_hash="h1")
    )

    assert created
    assert not created_again
    assert again.id == first.id
    assert again.idempotency_key == "k1"
    assert (await backend.list_jobs(TENANT)).data == [await get(backend, first.id)]


async def test_same_idempotency_key_with_another_hash_conflicts(backend: Backend) -> None:
    first = await create(backend, idempotency_key="k1", request_hash="h1")

    with pytest.raises(IdempotencyConflict):
        await backend.create_job(make_job(idempotency_key="k1", request_hash="h2"))

    assert [j.id for j in (await backend.list_jobs(TENANT)).data] == [first.id]


async def test_same_idempotency_key_for_another_kind_conflicts(backend: Backend) -> None:
    await create(backend, idempotency_key="k1", request_hash="h1")

    with pytest.raises(IdempotencyConflict):
        await backend.create_job(make_job(kind=OTHER_KIND, idempotency_key="k1", request_hash="h1"))


async def test_idempotency_keys_are_scoped_per_tenant(backend: Backend) -> None:
    mine = await create(backend, idempotency_key="k1", request_hash="h1")

    theirs, created = await backend.create_job(
        make_job(tenant=OTHER_TENANT, idempotency_key="k1", request_hash="h1")
    )

    assert created
    assert theirs.id != mine.id
    assert (await get(backend, theirs.id, OTHER_TENANT)).tenant == OTHER_TENANT


# -- claim -----------------------------------------------------------------------------------


async def test_claim_makes_the_job_running_with_attempt_one_and_a_lease(
    backend: Backend,
) -> None:
    job = await create(backend)

    [claimed] = await backend.claim_jobs(WORKER, [KIND], 10, LEASE)

    assert claimed.id == job.id
    assert (claimed.status, claimed.attempt, claimed.lease_owner) == (
        Status.RUNNING,
        1,
        WORKER,
    )
    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt, stored.lease_owner) == (Status.RUNNING, 1, WORKER)
    assert stored.started_at is not None


async def test_claim_appends_a_running_status_event_with_the_attempt(backend: Backend) -> None:
    job = await start(backend)

    events = await events_of(backend, job.id)

    assert [(e.sequence_number, e.type, e.data) for e in events] == [
        (0, "status", {"status": "pending", "attempt": 0}),
        (1, "status", {"status": "running", "attempt": 1}),
    ]
    assert (await get(backend, job.id)).last_sequence_number == 1


async def test_claim_takes_at_most_limit_jobs(backend: Backend) -> None:
    await backend.create_jobs([make_job() for _ in range(5)])

    first = await backend.claim_jobs(WORKER, [KIND], 3, LEASE)
    second = await backend.claim_jobs(WORKER, [KIND], 3, LEASE)
    third = await backend.claim_jobs(WORKER, [KIND], 3, LEASE)

    assert (len(first), len(second), len(third)) == (3, 2, 0)
    assert len({j.id for j in first + second}) == 5


async def test_claim_with_zero_limit_or_no_kinds_takes_nothing(backend: Backend) -> None:
    job = await create(backend)

    assert await backend.claim_jobs(WORKER, [KIND], 0, LEASE) == []
    assert await backend.claim_jobs(WORKER, [], 10, LEASE) == []
    assert (await get(backend, job.id)).status is Status.PENDING


async def test_claim_takes_only_the_kinds_asked_for(backend: Backend) -> None:
    summary = await create(backend, kind=KIND)
    translation = await create(backend, kind=OTHER_KIND)

    claimed = await backend.claim_jobs(WORKER, [OTHER_KIND], 10, LEASE)

    assert [j.id for j in claimed] == [translation.id]
    assert (await get(backend, summary.id)).status is Status.PENDING


async def test_claim_takes_higher_priority_first(backend: Backend) -> None:
    low = await create(backend, priority=0)
    high = await create(backend, priority=10)
    middle = await create(backend, priority=5)

    claimed = [(await claim_one(backend)).id for _ in range(3)]

    assert claimed == [high.id, middle.id, low.id]


async def test_claim_takes_equal_priority_jobs_oldest_first(backend: Backend) -> None:
    jobs = []
    for _ in range(4):
        jobs.append(await create(backend))
        await asyncio.sleep(0.005)  # distinct creation times on any store clock

    claimed = [(await claim_one(backend)).id for _ in range(4)]

    assert claimed == [j.id for j in jobs]


async def test_claim_takes_jobs_of_one_batch_in_submission_order(
    backend: Backend, backend_name: str
) -> None:
    # Ids in descending order, so ordering by id is the opposite of submission order.
    news = [make_job(id=f"job_{n:032x}") for n in (9, 8, 7, 6)]
    await backend.create_jobs(news)

    claimed = [(await claim_one(backend)).id for _ in range(4)]

    assert claimed == [n.id for n in news]


async def test_delayed_job_is_not_claimed_before_it_is_due(backend: Backend) -> None:
    job = await create(backend, delay_seconds=0.3)

    assert await backend.claim_jobs(WORKER, [KIND], 10, LEASE) == []
    stored = await get(backend, job.id)
    assert stored.run_at is not None
    assert stored.run_at > stored.created_at
    await asyncio.sleep(0.4)

    assert [j.id for j in await backend.claim_jobs(WORKER, [KIND], 10, LEASE)] == [job.id]


async def test_a_claimed_job_is_not_claimed_again(backend: Backend) -> None:
    await start(backend)

    assert await backend.claim_jobs(OTHER_WORKER, [KIND], 10, LEASE) == []


async def test_concurrent_claims_never_return_the_same_job(backend: Backend) -> None:
    news = [make_job() for _ in range(40)]
    await backend.create_jobs(news)
    taken: dict[str, list[str]] = {WORKER: [], OTHER_WORKER: []}

    async def drain(worker: str) -> None:
        while claimed := await backend.claim_jobs(worker, [KIND], 3, LEASE):
            taken[worker] += [j.id for j in claimed]
            await asyncio.sleep(0)

    await asyncio.gather(drain(WORKER), drain(OTHER_WORKER))

    all_taken = taken[WORKER] + taken[OTHER_WORKER]
    assert sorted(all_taken) == sorted(n.id for n in news)
    for new in news:
        assert await status_trail(backend, new.id) == [("pending", 0), ("running", 1)]


async def test_gathered_claims_split_the_jobs_between_workers(backend: Backend) -> None:
    await backend.create_jobs([make_job() for _ in range(6)])

    first, second = await asyncio.gather(
        backend.claim_jobs(WORKER, [KIND], 4, LEASE),
        backend.claim_jobs(OTHER_WORKER, [KIND], 4, LEASE),
    )

    assert len(first) + len(second) == 6
    assert not {j.id for j in first} & {j.id for j in second}
    assert {j.lease_owner for j in first} <= {WORKER}
    assert {j.lease_owner for j in second} <= {OTHER_WORKER}


# -- finish ----------------------------------------------------------------------------------


async def test_completed_stores_the_result_and_inlines_a_small_one(backend: Backend) -> None:
    job = await start(backend)

    assert await complete(backend, job, {"summary": "a fox"})

    stored = await get(backend, job.id)
    assert stored.status is Status.COMPLETED
    assert stored.result == {"summary": "a fox"}
    assert stored.result_size == len(json.dumps({"summary": "a fox"}).encode())
    assert (stored.progress, stored.lease_owner, stored.error) == (1.0, None, None)
    assert stored.finished_at is not None
    result = await backend.get_result(TENANT, job.id)
    assert result is not None
    assert (json.loads(result.body), result.content_type) == (
        {"summary": "a fox"},
        "application/json",
    )
    assert (await last_event(backend, job.id)).data == {"status": "completed", "attempt": 1}


async def test_get_job_without_result_leaves_the_result_out(backend: Backend) -> None:
    job = await start(backend)
    await complete(backend, job, [1, 2, 3])

    stored = await backend.get_job(TENANT, job.id, with_result=False)

    assert stored is not None
    assert (stored.result, stored.result_size) == (None, len(b"[1, 2, 3]"))


async def test_a_result_over_the_inline_limit_is_only_sized(backend: Backend) -> None:
    job = await start(backend)
    body = json.dumps("x" * (300 * 1024)).encode()  # over the default 256 KiB inline limit

    assert await finish(backend, job, Completed(body))

    stored = await get(backend, job.id)
    assert (stored.result, stored.result_size) == (None, len(body))
    result = await backend.get_result(TENANT, job.id)
    assert result is not None
    assert result.body == body


async def test_completed_result_expires_ttl_after_the_finish(backend: Backend) -> None:
    job = await start(backend, result_ttl_seconds=120.0)
    await complete(backend, job, "done")

    stored = await get(backend, job.id)

    assert stored.finished_at is not None
    assert stored.expires_at is not None
    kept = (stored.expires_at - stored.finished_at).total_seconds()
    assert kept == pytest.approx(120.0, abs=0.01)
    assert not stored.result_expired


async def test_finish_by_another_worker_is_rejected_and_changes_nothing(
    backend: Backend,
) -> None:
    job = await start(backend)
    before = await get(backend, job.id)

    accepted = await finish(backend, job, Completed(b'"stolen"'), worker=OTHER_WORKER)

    assert not accepted
    assert await get(backend, job.id) == before
    assert len(await events_of(backend, job.id)) == 2
    assert await backend.get_result(TENANT, job.id) is None


async def test_finish_with_a_stale_attempt_is_rejected(backend: Backend) -> None:
    first = await start(backend, max_attempts=3)
    await fail_for_retry(backend, first)
    second = await claim_one(backend)
    before = await get(backend, second.id)

    accepted = await finish(backend, first, Completed(b'"zombie"'))

    assert not accepted
    assert second.attempt == 2
    assert await get(backend, second.id) == before
    assert await backend.get_result(TENANT, second.id) is None


async def test_a_terminal_job_cannot_be_finished_again(backend: Backend) -> None:
    job = await start(backend)
    assert await complete(backend, job, "first")

    again = await finish(backend, job, Failed(BOOM))
    once_more = await complete(backend, job, "second")

    assert (again, once_more) == (False, False)
    stored = await get(backend, job.id)
    assert (stored.status, stored.result, stored.error) == (Status.COMPLETED, "first", None)
    assert [s for s, _ in await status_trail(backend, job.id)] == [
        "pending",
        "running",
        "completed",
    ]


async def test_finish_jobs_answers_each_finish_of_a_batch(backend: Backend) -> None:
    mine = await start(backend)
    theirs = await create(backend)
    await claim_one(backend, OTHER_WORKER)

    answers = await backend.finish_jobs(
        WORKER,
        [
            Finish(mine.id, mine.attempt, Completed(b"1")),
            Finish(theirs.id, 1, Completed(b"2")),
        ],
    )

    assert answers == [True, False]
    assert (await get(backend, theirs.id)).status is Status.RUNNING


async def test_failed_with_retry_in_goes_back_to_pending_with_the_error(
    backend: Backend,
) -> None:
    job = await start(backend, max_attempts=3)

    assert await fail_for_retry(backend, job, retry_in=60.0)

    stored = await get(backend, job.id)
    assert (stored.status, stored.attempt, stored.error, stored.lease_owner) == (
        Status.PENDING,
        1,
        BOOM,
        None,
    )
    assert stored.run_at is not None
    assert stored.run_at > datetime.now(UTC)
    assert await backend.claim_jobs(WORKER, [KIND], 10, LEASE) == []
    assert (await last_event(backend, job.id)).data == {
        "status": "pending",
        "attempt": 1,
        "detail": {"retry_in": 60.0, "error": BOOM.model_dump()},
    }


async def test_the_claim_after_a_retry_is_attempt_two(backend: Backend) -> None:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job, retry_in=0.0)

    again = await claim_one(backend)

    assert (again.id, again.attempt, again.status) == (job.id, 2, Status.RUNNING)
    assert await status_trail(backend, job.id) == [
        ("pending", 0),
        ("running", 1),
        ("pending", 1),
        ("running", 2),
    ]


async def test_failed_without_retry_in_is_failed_with_the_error(backend: Backend) -> None:
    job = await start(backend, max_attempts=3)
    error = JobError(type="bad_document", message="not a PDF", retryable=False)

    assert await finish(backend, job, Failed(error))

    stored = await get(backend, job.id)
    assert (stored.status, stored.error, stored.lease_owner) == (Status.FAILED, error, None)
    assert stored.finished_at is not None
    assert await backend.get_result(TENANT, job.id) is None
    assert (await last_event(backend, job.id)).data == {
        "status": "failed",
        "attempt": 1,
        "detail": {"error": error.model_dump()},
    }


async def test_cancelled_outcome_records_cancelled(backend: Backend) -> None:
    job = await start(backend)

    assert await finish(backend, job, Cancelled())

    stored = await get(backend, job.id)
    assert (stored.status, stored.error, stored.lease_owner) == (Status.CANCELLED, None, None)
    assert (await last_event(backend, job.id)).data == {"status": "cancelled", "attempt": 1}


@pytest.mark.parametrize("retry_in", [None, 0.0], ids=["final", "retryable"])
async def test_a_failure_after_cancel_was_requested_records_cancelled(
    backend: Backend, retry_in: float | None
) -> None:
    job = await start(backend, max_attempts=3)
    await backend.request_cancel(TENANT, job.id)

    assert await finish(backend, job, Failed(BOOM, retry_in=retry_in))

    stored = await get(backend, job.id)
    assert (stored.status, stored.error) == (Status.CANCELLED, None)
    assert await backend.claim_jobs(WORKER, [KIND], 10, LEASE) == []
    assert (await last_event(backend, job.id)).data["status"] == "cancelled"


async def test_the_cancelled_event_of_a_retryable_failure_has_no_retry_detail(
    backend: Backend,
) -> None:
    job = await start(backend, max_attempts=3)
    await backend.request_cancel(TENANT, job.id)

    await fail_for_retry(backend, job, retry_in=5.0)

    assert (await last_event(backend, job.id)).data == {"status": "cancelled", "attempt": 1}


async def test_a_completion_after_cancel_was_requested_stays_completed(
    backend: Backend,
) -> None:
    job = await start(backend)
    await backend.request_cancel(TENANT, job.id)

    assert await complete(backend, job, "made it")

    stored = await get(backend, job.id)
    assert (stored.status, stored.result) == (Status.COMPLETED, "made it")


async def test_finish_applies_its_update_before_the_terminal_event(backend: Backend) -> None:
    job = await start(backend)
    last_words = update(
        job,
        ("log", {"level": "info", "message": "writing summary"}),
        ("output", {"delta": "A fox."}),
        progress=0.9,
        stage="writing",
        input_tokens=120,
        output_tokens=7,
    )

    [accepted] = await backend.finish_jobs(
        WORKER, [Finish(job.id, job.attempt, Completed(b'"A fox."'), update=last_words)]
    )

    assert accepted
    events = await events_of(backend, job.id)
    assert [(e.sequence_number, e.type) for e in events] == [
        (0, "status"),
        (1, "status"),
        (2, "log"),
        (3, "output"),
        (4, "status"),
    ]
    assert events[3].data == {"delta": "A fox."}
    assert events[4].data["status"] == "completed"
    stored = await get(backend, job.id)
    assert (stored.status, stored.progress, stored.stage) == (Status.COMPLETED, 1.0, "writing")
    assert stored.usage == Usage(input_tokens=120, output_tokens=7)
    assert stored.last_sequence_number == 4


async def test_a_rejected_finish_does_not_apply_its_update(backend: Backend) -> None:
    job = await start(backend)
    late = update(job, ("log", {"message": "late"}), progress=0.5)

    [accepted] = await backend.finish_jobs(
        OTHER_WORKER, [Finish(job.id, job.attempt, Completed(b"1"), update=late)]
    )

    assert not accepted
    assert len(await events_of(backend, job.id)) == 2
    assert (await get(backend, job.id)).progress == 0.0


async def test_a_job_completed_after_a_retry_reports_no_error(
    backend: Backend, backend_name: str
) -> None:
    job = await start(backend, max_attempts=3)
    await fail_for_retry(backend, job)
    again = await claim_one(backend)

    await complete(backend, again, "second time lucky")

    stored = await get(backend, job.id)
    assert (stored.status, stored.error) == (Status.COMPLETED, None)


@pytest.mark.parametrize("outcome", [Failed(BOOM), Cancelled()], ids=["failed", "cancelled"])
async def test_a_job_that_did_not_complete_has_no_eta(
    backend: Backend,
    backend_name: str,
    outcome: Failed | Cancelled,
) -> None:
    job = await start(backend)
    await backend.append_events(WORKER, [update(job, progress=0.5, eta_seconds=30.0)])

    await finish(backend, job, outcome)

    assert (await get(backend, job.id)).eta_seconds is None


async def test_a_non_json_result_is_served_as_stored_and_not_inlined(
    backend: Backend, backend_name: str
) -> None:
    job = await start(backend)

    assert await finish(backend, job, Completed(b"plain words", content_type="text/plain"))

    stored = await get(backend, job.id)
    assert (stored.status, stored.result, stored.result_size) == (Status.COMPLETED, None, 11)
    result = await backend.get_result(TENANT, job.id)
    assert result is not None
    assert (result.body, result.content_type) == (b"plain words", "text/plain")


async def test_finishing_one_job_twice_in_a_batch_accepts_only_the_first(
    backend: Backend, backend_name: str
) -> None:
    job = await start(backend)

    answers = await backend.finish_jobs(
        WORKER,
        [
            Finish(job.id, job.attempt, Completed(b'"first"')),
            Finish(job.id, job.attempt, Failed(BOOM)),
        ],
    )

    assert answers == [True, False]
    stored = await get(backend, job.id)
    assert (stored.status, stored.result) == (Status.COMPLETED, "first")
    assert [s for s, _ in await status_trail(backend, job.id)] == [
        "pending",
        "running",
        "completed",
    ]


async def _read(stream: ResultStream) -> list[bytes]:
    return [chunk async for chunk in stream.chunks]


async def test_a_large_result_streams_in_parts_of_the_asked_size(backend: Backend) -> None:
    job = await start(backend)
    body = os.urandom(1024 * 1024 + 17)
    assert await finish(backend, job, Completed(body, "application/octet-stream"))

    stream = await backend.stream_result(TENANT, job.id, chunk_size=256 * 1024)

    assert stream is not None
    assert (stream.content_type, stream.size) == ("application/octet-stream", len(body))
    parts = await _read(stream)
    assert [len(p) for p in parts] == [256 * 1024] * 4 + [17]
    assert b"".join(parts) == body


async def test_a_small_result_streams_as_one_part(backend: Backend) -> None:
    job = await start(backend)
    await complete(backend, job, {"summary": "a fox"})

    stream = await backend.stream_result(TENANT, job.id)

    assert stream is not None
    assert (stream.content_type, stream.size) == ("application/json", 20)
    assert await _read(stream) == [b'{"summary": "a fox"}']


async def test_no_stream_without_a_result_or_for_another_tenant(backend: Backend) -> None:
    job = await start(backend)
    assert await backend.stream_result(TENANT, job.id) is None
    await complete(backend, job, [1])
    assert await backend.stream_result(OTHER_TENANT, job.id) is None
    assert await backend.stream_result(TENANT, "job_missing") is None
