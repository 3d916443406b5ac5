"""Several API servers and workers on one PostgreSQL database, as on several machines."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.checker import Fault, check_run
from tests.acceptance.conftest import report_on_failure
from tests.acceptance.harness import (
    Cluster,
    LongjobsProcess,
    get_job,
    read_sse,
    stored_events,
    submit,
    submit_many,
    unfinished_count,
    wait_all_terminal,
    wait_for_status,
    wait_terminal,
    wait_until,
    wait_worker_ready,
)
from tests.acceptance.ledger import read_ledger
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

NO_HEARTBEAT_SOON = {"LONGJOBS_LEASE_SECONDS": "90"}
"""Heartbeats every 30 s: a cancel that arrives sooner came by notification."""


@pytest.fixture
def pg_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_dsn: str
) -> Iterator[Cluster]:
    processes = Cluster(tmp_path, database_url=postgres_dsn)
    report_on_failure(request, processes)
    try:
        yield processes
    finally:
        processes.stop_all()


def _two_servers_three_workers(cluster: Cluster) -> tuple[str, str, list[LongjobsProcess]]:
    server_a = cluster.serve(worker=False, env=NO_HEARTBEAT_SOON)
    server_b = cluster.serve(worker=False, env=NO_HEARTBEAT_SOON)
    workers = [cluster.worker(ready=False, env=NO_HEARTBEAT_SOON) for _ in range(3)]
    for worker in workers:
        wait_worker_ready(worker)
    assert server_a.base_url is not None
    assert server_b.base_url is not None
    return server_a.base_url, server_b.base_url, workers


def test_a_stream_on_one_server_follows_a_job_submitted_through_another(
    pg_cluster: Cluster,
) -> None:
    url_a, url_b, _ = _two_servers_three_workers(pg_cluster)
    with httpx.Client(base_url=url_b, timeout=30) as via_b:
        job_id = submit(via_b, "chatty", {"lines": 40, "interval_ms": 20})
        with (
            httpx.Client(base_url=url_a, timeout=30) as via_a,
            via_a.stream("GET", f"/v1/jobs/{job_id}/events") as stream,
        ):
            assert stream.status_code == 200
            frames = [f for f in read_sse(stream.iter_lines()) if f.data]
        stored = stored_events(via_b, job_id)

    received = [json.loads(f.data) for f in frames]
    assert [e["sequence_number"] for e in received] == list(range(len(received)))
    assert received == stored
    assert received[-1]["status"] == "completed"
    assert sum(e["type"] == "log" for e in received) == 40


def test_a_cancel_through_one_server_stops_the_job_on_whichever_worker_holds_it(
    pg_cluster: Cluster,
) -> None:
    url_a, url_b, workers = _two_servers_three_workers(pg_cluster)
    with (
        httpx.Client(base_url=url_a, timeout=30) as via_a,
        httpx.Client(base_url=url_b, timeout=30) as via_b,
    ):
        job_id = submit(via_a, "sleepy", {"seconds": 120})
        wait_for_status(via_b, job_id, {"running"}, timeout=30)
        wait_until(
            lambda: read_ledger(pg_cluster.ledger_path), timeout=10, what="the handler to start"
        )
        [start] = read_ledger(pg_cluster.ledger_path)

        asked = time.monotonic()
        response = via_b.post(f"/v1/jobs/{job_id}/cancel")
        # Long before the holder's next heartbeat (30 s): the request came by notification.
        job = wait_terminal(via_a, job_id, timeout=10)
        took = time.monotonic() - asked

    assert response.status_code == 200
    assert job["status"] == "cancelled"
    cleanups = [line for line in read_ledger(pg_cluster.ledger_path) if line["event"] == "cleanup"]
    assert {line["pid"] for line in cleanups} == {start["pid"]}
    assert start["pid"] in {w.pid for w in workers}
    print(f"cancel through another server to cancelled: {took * 1000:.0f} ms")


# -- crashes -------------------------------------------------------------------------------------
CHAOS_JOBS = 1000
CHAOS_CONCURRENCY = 16
KILL_EVERY = 2.0
CHAOS_SECONDS = 30.0


def test_sigkill_chaos_on_postgres_loses_no_job_and_commits_each_once(
    pg_cluster: Cluster,
) -> None:
    """RELIABILITY.md R1 on PostgreSQL: 1,000 jobs, 3 workers, a random one SIGKILLed every
    2 s for 30 s (and replaced): no job lost, none committed twice, every extra start
    explained by a kill."""
    rng = random.Random(5)
    server = pg_cluster.serve(worker=False)
    workers = [pg_cluster.worker(concurrency=CHAOS_CONCURRENCY, ready=False) for _ in range(3)]
    for worker in workers:
        wait_worker_ready(worker)
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30.0) as api:
        inputs = [{"steps": 10, "step_ms": rng.randint(80, 160)} for _ in range(CHAOS_JOBS)]
        job_ids = submit_many(api, "ledger_job", inputs)
        faults: list[Fault] = []
        end = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < end and unfinished_count(api) > 0:
            time.sleep(KILL_EVERY)
            slot = rng.randrange(len(workers))
            faults.append(Fault(pid=workers[slot].pid, at=workers[slot].kill()))
            workers[slot] = pg_cluster.worker(concurrency=CHAOS_CONCURRENCY, ready=False)
        wait_all_terminal(api, timeout=120)
        report = check_run(
            api, job_ids, ledger_path=pg_cluster.ledger_path, db_path=None, faults=faults,
            attribution_window=60.0,
        )  # fmt: skip
    report.write(
        pg_cluster.directory / "report.json",
        parameters={"jobs": CHAOS_JOBS, "workers": 3, "concurrency": CHAOS_CONCURRENCY,
                    "kill_every": KILL_EVERY, "chaos_seconds": CHAOS_SECONDS},
        timings={},
    )  # fmt: skip
    assert report.violations() == []
    assert report.completed == CHAOS_JOBS
    assert len(faults) >= 10, "the jobs finished before the chaos could hit them"
    assert report.rescued > 0, "no job was rescued from a killed worker"
    assert pg_cluster.stderr_containing("Traceback") == []


def test_a_database_crash_during_submissions_loses_no_accepted_job(
    tmp_path: Path, private_postgres_server: PostgresServer
) -> None:
    """RELIABILITY.md R4: PostgreSQL stopped with ``-m immediate`` and started again while
    clients submit: meanwhile the API answers 503 with Retry-After (never 500), and every job
    it answered 202 for exists afterwards and completes."""
    database = asyncio.run(private_postgres_server.create_database())
    cluster = Cluster(tmp_path, database_url=private_postgres_server.dsn(database))
    try:
        server = cluster.serve(worker=False)
        cluster.worker(concurrency=8)
        assert server.base_url is not None
        accepted, refused = _submit_through_a_crash(server.base_url, private_postgres_server)
        with httpx.Client(base_url=server.base_url, timeout=30.0) as api:
            wait_until(lambda: unfinished_count(api) == 0, timeout=60, interval=0.25,
                       what="every accepted job to finish")  # fmt: skip
            finished = [get_job(api, job_id)["status"] for job_id in accepted]
    finally:
        cluster.stop_all()

    assert len(accepted) > 50
    assert finished == ["completed"] * len(accepted)
    assert refused, "no submission met the outage"
    assert {status for status, _ in refused} == {503}
    assert all(retry_after for _, retry_after in refused)


def _submit_through_a_crash(
    base_url: str, server: PostgresServer
) -> tuple[list[str], list[tuple[int, str | None]]]:
    """Submit ``ledger_job`` jobs one after another for ~6 s; 1.5 s in, the database stops
    at once, and starts again 2 s later. Returns the accepted ids and the refusals."""
    accepted: list[str] = []
    refused: list[tuple[int, str | None]] = []
    body = {"kind": "ledger_job", "input": {"steps": 1, "step_ms": 1}}
    crashed = restarted = False
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=30.0) as api:
        while (elapsed := time.monotonic() - started) < 6.0:
            if elapsed > 1.5 and not crashed:
                server.stop("immediate")
                crashed = True
            if elapsed > 3.5 and not restarted:
                server.start()
                restarted = True
            response = api.post("/v1/jobs", json=body)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                refused.append((response.status_code, response.headers.get("retry-after")))
                time.sleep(0.05)
    return accepted, refused
