"""``Client`` and ``AsyncClient`` against a real ``longjobs serve`` over real sockets."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator

import httpx
import pytest

from longjobs import (
    APIError,
    AsyncClient,
    Client,
    JobCancelled,
    JobFailed,
    NotFinished,
    ResultExpired,
)
from longjobs.client import (
    Backoff,
    ConnectionFailed,
    EventResource,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from tests.acceptance.harness import (
    Cluster,
    LongjobsProcess,
    create_key,
    free_port,
    stored_events,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

FAST = Backoff(base=0.05, cap=0.5)


@pytest.fixture
def server(cluster: Cluster) -> LongjobsProcess:
    return cluster.serve()


@pytest.fixture
def client(server: LongjobsProcess) -> Iterator[Client]:
    with Client(server.base_url, backoff=FAST) as client:
        yield client


def test_submit_get_wait_and_result(client: Client) -> None:
    job = client.submit("ledger_job", {"steps": 3, "step_ms": 20}, metadata={"who": "test"})
    assert job.status == "pending"
    assert job.metadata == {"who": "test"}
    assert client.get(job.id).id == job.id

    finished = client.wait(job.id, timeout=30)

    assert finished.status == "completed"
    assert finished.progress == 1.0
    result = client.result(job.id)
    assert result["job_id"] == job.id
    assert result == finished.result


def test_submit_with_wait_returns_the_finished_job(client: Client) -> None:
    job = client.submit("sleepy", {"seconds": 0}, wait=10)
    assert job.status == "completed"
    assert job.result == {"slept": 0, "attempt": 1}


def test_the_same_idempotency_key_gives_the_same_job(client: Client) -> None:
    first = client.submit("sleepy", {"seconds": 0}, idempotency_key="order-17")
    again = client.submit("sleepy", {"seconds": 0}, idempotency_key="order-17")
    other = client.submit("sleepy", {"seconds": 0})
    assert again.id == first.id
    assert other.id != first.id
    with pytest.raises(InvalidRequest) as caught:
        client.submit("sleepy", {"seconds": 1}, idempotency_key="order-17")
    assert caught.value.problem.type == "/problems/idempotency-conflict"


def test_list_iterates_every_page(client: Client) -> None:
    ids = {client.submit("sleepy", {"seconds": 0}, priority=i).id for i in range(7)}
    listed = [job.id for job in client.list(page_size=2)]
    assert set(listed) == ids
    assert len(listed) == 7
    for job_id in ids:
        client.wait(job_id, timeout=30)
    assert {job.id for job in client.list(status="completed", kind="sleepy")} == ids
    assert list(client.list(kind="crash")) == []


def test_events_yield_the_whole_log_in_order(client: Client) -> None:
    job = client.submit("ledger_job", {"steps": 5, "step_ms": 30})
    events = list(client.events(job.id))
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    assert events[-1].is_terminal
    assert events[-1].get("status") == "completed"
    progress = [event.get("progress") for event in events if event.type == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    after = list(client.events(job.id, after=numbers[-3]))
    assert [event.sequence_number for event in after] == numbers[-2:]
    assert list(client.events(job.id, after=numbers[-1])) == []


def test_cancel_and_delete(client: Client) -> None:
    job = client.submit("sleepy", {"seconds": 60})
    wait_until(lambda: client.get(job.id).status == "running", timeout=30, what="running")
    assert client.cancel(job.id).cancel_requested is True
    assert client.wait(job.id, timeout=30).status == "cancelled"
    with pytest.raises(JobCancelled) as caught:
        client.result(job.id)
    assert caught.value.status == 409

    client.delete(job.id)
    with pytest.raises(NotFound):
        client.get(job.id)
    with pytest.raises(NotFound):
        client.delete(job.id)


def test_typed_errors_carry_the_problem(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.get("job_doesnotexist")
    assert missing.value.problem.type == "/problems/job-not-found"
    with pytest.raises(NotFound) as unknown:
        client.submit("no_such_kind")
    assert unknown.value.problem.type == "/problems/unknown-kind"
    with pytest.raises(InvalidRequest) as invalid:
        client.submit("sleepy", {"seconds": "soon"})
    assert invalid.value.status == 422
    assert invalid.value.problem.errors
    assert invalid.value.problem.errors[0].loc[-1] == "seconds"

    failing = client.submit("crash")
    assert client.wait(failing.id, timeout=30).status == "failed"
    with pytest.raises(JobFailed) as failed:
        client.result(failing.id)
    assert failed.value.problem.error is not None
    assert "boom" in failed.value.problem.error.message

    slow = client.submit("sleepy", {"seconds": 60})
    with pytest.raises(NotFinished) as early:
        client.result(slow.id)
    assert early.value.retry_after is not None
    with pytest.raises(WaitTimeout):
        client.wait(slow.id, timeout=0.5)
    client.cancel(slow.id)
    assert all(issubclass(e, APIError) for e in (NotFound, JobFailed, NotFinished))


def test_an_expired_result_raises_result_expired(client: Client) -> None:
    job = client.submit("sleepy", {"seconds": 0}, result_ttl_seconds=0.2, wait=10)
    assert job.status == "completed"

    def expired() -> bool:
        try:
            client.result(job.id)
        except ResultExpired as exc:
            return exc.status == 410
        return False

    wait_until(expired, timeout=30, what="the result to expire")


def test_a_wrong_key_is_unauthorized(cluster: Cluster, server: LongjobsProcess) -> None:
    _, key = create_key(cluster, "acme")
    with Client(server.base_url, api_key=key) as client:
        job = client.submit("sleepy", {"seconds": 0}, wait=10)
        assert job.status == "completed"
    with (
        Client(server.base_url, api_key="lj_wrong", backoff=FAST) as intruder,
        pytest.raises(Unauthorized),
    ):
        intruder.get(job.id)
    with Client(server.base_url, backoff=FAST) as anonymous, pytest.raises(Unauthorized):
        list(anonymous.list())


def test_an_unreachable_server_is_connection_failed(cluster: Cluster) -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=FAST) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.get("job_x")
    assert "cannot reach" in str(caught.value)


def test_events_survive_the_server_being_killed_and_restarted(cluster: Cluster) -> None:
    """The API restarts twice while a worker process keeps the job running; the client sees
    every event exactly once, in order, to the terminal one."""
    server = cluster.serve(worker=False)
    cluster.worker()
    assert server.base_url is not None
    port = int(server.base_url.rsplit(":", 1)[1])
    received: list[EventResource] = []
    errors: list[BaseException] = []
    with Client(server.base_url, backoff=FAST, reconnect_for=60) as client:
        job = client.submit("ledger_job", {"steps": 60, "step_ms": 100})

        def consume() -> None:
            try:
                for event in client.events(job.id):
                    received.append(event)
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        reader = threading.Thread(target=consume)
        reader.start()
        for _ in range(2):
            wait_for_more(received, 10)
            server.kill()
            server = cluster.serve(worker=False, port=port)
        reader.join(timeout=60)
        assert not reader.is_alive()
        assert not errors, errors
        with httpx.Client(base_url=client.server) as api:
            stored = [e["sequence_number"] for e in stored_events(api, job.id)]

    numbers = [event.sequence_number for event in received]
    assert numbers == list(range(len(numbers)))
    assert numbers == stored
    assert received[-1].get("status") == "completed"


def wait_for_more(received: list[EventResource], count: int) -> None:
    target = len(received) + count
    wait_until(lambda: len(received) >= target, timeout=30, what=f"{count} more events")


async def test_the_async_client_does_the_same(server: LongjobsProcess) -> None:
    async with AsyncClient(server.base_url, backoff=FAST) as client:
        jobs = await asyncio.gather(
            *(client.submit("ledger_job", {"steps": 3, "step_ms": 10}) for _ in range(5))
        )
        finished = await asyncio.gather(*(client.wait(job.id, timeout=30) for job in jobs))
        assert {job.status for job in finished} == {"completed"}
        events = [event async for event in client.events(jobs[0].id)]
        assert events[-1].is_terminal
        listed = [job.id async for job in client.list(page_size=2)]
        assert sorted(listed) == sorted(job.id for job in jobs)
        kinds = {kind.name for kind in await client.kinds()}
        assert {"ledger_job", "sleepy", "crash"} <= kinds


def test_429_is_retried_after_retry_after_then_raised_typed(cluster: Cluster) -> None:
    limited = {"LONGJOBS_RATE_LIMIT_PER_SECOND": "1", "LONGJOBS_RATE_LIMIT_BURST": "1"}
    server = cluster.serve(env=limited)
    _, key = create_key(cluster, "acme")
    with Client(server.base_url, api_key=key, retries=0) as impatient:
        impatient.kinds()
        with pytest.raises(RateLimited) as caught:
            impatient.kinds()
    assert caught.value.status == 429
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 1
    with Client(server.base_url, api_key=key, retries=3, backoff=FAST) as patient:
        names = [{kind.name for kind in patient.kinds()} for _ in range(3)]
    assert all("sleepy" in found for found in names), "each call got through after waiting"


@pytest.mark.sqlite_only  # holds the SQLite file's write lock
def test_a_locked_store_is_503_raised_as_unavailable_or_retried_through(
    cluster: Cluster,
) -> None:
    server = cluster.serve("--database-url", f"{cluster.database_url}?lock_timeout=0.3")
    locker = sqlite3.connect(cluster.db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with Client(server.base_url, retries=0) as impatient, pytest.raises(Unavailable) as caught:
            impatient.submit("sleepy", {"seconds": 0})
        release = threading.Timer(1.0, lambda: locker.execute("ROLLBACK"))
        release.start()
        with Client(server.base_url, retries=5, backoff=FAST) as patient:
            job = patient.submit("sleepy", {"seconds": 0})
        release.join()
    finally:
        locker.close()
    assert caught.value.status == 503
    assert caught.value.retry_after is not None
    assert job.status == "pending"
