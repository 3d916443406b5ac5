"""Several `longjobs worker` processes on one SQLite file, fed by `longjobs serve --no-worker`."""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.acceptance.checker import check_run
from tests.acceptance.harness import (
    Cluster,
    LongjobsProcess,
    free_port,
    get_job,
    stored_events,
    submit,
    submit_many,
    wait_all_terminal,
    wait_for_status,
    wait_terminal,
    wait_until,
    wait_worker_ready,
)
from tests.acceptance.ledger import read_ledger

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

SHUTDOWN_GRACE = 1.0
LONG_LEASE = {"LONGJOBS_LEASE_SECONDS": "30"}
"""A lease far longer than the test waits: a job rerun sooner was released, not rescued."""


@pytest.fixture
def api_only(cluster: Cluster) -> Iterator[httpx.Client]:
    """A client of ``longjobs serve --no-worker`` in the test's cluster."""
    server = cluster.serve(worker=False)
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


def start_workers(cluster: Cluster, count: int, **options: Any) -> list[LongjobsProcess]:
    """Start ``count`` workers together (their imports overlap), then wait for each."""
    workers = [cluster.worker(ready=False, **options) for _ in range(count)]
    for worker in workers:
        wait_worker_ready(worker)
    return workers


def wait_progress(client: httpx.Client, job_id: str, at_least: float) -> None:
    def advanced() -> bool:
        progress: float = get_job(client, job_id)["progress"]
        return progress >= at_least

    wait_until(advanced, timeout=30, what=f"{job_id} to reach progress {at_least}")


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_three_workers_complete_200_jobs_each_exactly_once(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    workers = start_workers(cluster, 3, concurrency=4)
    rng = random.Random(20261204)
    inputs = [{"steps": 5, "step_ms": rng.randint(20, 80)} for _ in range(200)]

    job_ids = submit_many(api_only, "ledger_job", inputs)
    wait_all_terminal(api_only, timeout=90)

    db_path = cluster.db_path if cluster.on_sqlite else None
    report = check_run(api_only, job_ids, ledger_path=cluster.ledger_path, db_path=db_path)
    report.write(cluster.directory / "report.json", workers=3, concurrency=4)
    assert report.violations() == []
    assert report.completed == 200
    assert report.dup_exec == 0, "no fault was injected, so no job may run twice"
    pids = {line["pid"] for line in read_ledger(cluster.ledger_path)}
    assert pids == {worker.pid for worker in workers}, "every worker takes a share"
    assert cluster.stderr_containing("database is locked") == []
    assert cluster.stderr_containing("Traceback") == []


def test_sigterm_releases_running_jobs_to_another_worker_at_once(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    env = {**LONG_LEASE, "LONGJOBS_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE)}
    first = cluster.worker(concurrency=4, env=env)
    job_ids = [submit(api_only, "ledger_job", {"steps": 80, "step_ms": 100}) for _ in range(4)]
    for job_id in job_ids:  # all four run on the first worker and have checkpointed a few steps
        wait_progress(api_only, job_id, 0.1)
    second = cluster.worker(concurrency=4, env=env)

    stopped_at = time.time()
    first.signal_group(signal.SIGTERM)
    exit_code = first.wait(timeout=SHUTDOWN_GRACE + 15)
    jobs = [wait_terminal(api_only, job_id, timeout=60) for job_id in job_ids]

    assert exit_code == 0, first.stderr()
    for job in jobs:
        assert job["status"] == "completed"
        assert job["attempt"] == 1, "a released attempt is not counted"
        assert job["result"]["pid"] == second.pid
        assert job["result"]["resumed_from"] > 0, "the second worker resumes at the checkpoint"
        statuses = [e for e in stored_events(api_only, job["id"]) if e["type"] == "status"]
        assert [(e["status"], e["attempt"]) for e in statuses] == [
            ("pending", 0),
            ("running", 1),
            ("pending", 0),
            ("running", 1),
            ("completed", 1),
        ]
        assert statuses[2]["detail"]["reason"] == "released"
        rerun_after = timestamp(statuses[3]["at"]) - stopped_at
        assert rerun_after < float(LONG_LEASE["LONGJOBS_LEASE_SECONDS"]), "it waited for the lease"
        starts = [
            line
            for line in read_ledger(cluster.ledger_path)
            if line["job_id"] == job["id"] and line["event"] == "start"
        ]
        assert [line["pid"] for line in starts] == [first.pid, second.pid]
        assert starts[1]["resumed_from"] == job["result"]["resumed_from"]
    assert cluster.stderr_containing("Traceback") == []


def test_sigterm_keeps_the_checkpoint_a_handler_saves_while_it_stops(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    env = {**LONG_LEASE, "LONGJOBS_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE)}
    first = cluster.worker(concurrency=1, env=env)
    job_id = submit(api_only, "save_on_stop", {"seconds": 60})
    wait_for_status(api_only, job_id, {"running"}, timeout=30)
    wait_until(lambda: read_ledger(cluster.ledger_path), timeout=10, what="the handler to start")

    first.signal_group(signal.SIGTERM)
    assert first.wait(timeout=SHUTDOWN_GRACE + 15) == 0, first.stderr()
    second = cluster.worker(concurrency=1, env=env)
    resumed = wait_until(
        lambda: [
            line
            for line in read_ledger(cluster.ledger_path)
            if line["event"] == "start" and line["pid"] == second.pid
        ],
        timeout=30,
        what="the second worker to start the job",
    )

    cleanups = [line for line in read_ledger(cluster.ledger_path) if line["event"] == "cleanup"]
    assert [line["pid"] for line in cleanups] == [first.pid], "the handler saved as it stopped"
    assert resumed[0]["resumed_from"] == {"saved_on_stop": True, "attempt": 1}
    api_only.post(f"/v1/jobs/{job_id}/cancel")


def test_cancel_through_the_api_stops_a_job_on_a_worker_process(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    worker = cluster.worker(concurrency=2)
    job_id = submit(api_only, "sleepy", {"seconds": 60})
    wait_for_status(api_only, job_id, {"running"}, timeout=30)
    wait_until(lambda: read_ledger(cluster.ledger_path), timeout=10, what="the handler to start")

    response = api_only.post(f"/v1/jobs/{job_id}/cancel")
    job = wait_terminal(api_only, job_id, timeout=30)

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    assert job["status"] == "cancelled"
    cleanups = [line for line in read_ledger(cluster.ledger_path) if line["event"] == "cleanup"]
    assert {line["via"] for line in cleanups} == {"on_cancel", "finally"}
    assert {line["pid"] for line in cleanups} == {worker.pid}
    assert worker.alive


def test_a_worker_serves_its_own_metrics(cluster: Cluster, api_only: httpx.Client) -> None:
    port = free_port()
    cluster.worker("--metrics-port", str(port))
    job_ids = [submit(api_only, "sleepy", {"seconds": 0}) for _ in range(3)]
    for job_id in job_ids:
        assert wait_terminal(api_only, job_id)["status"] == "completed"

    def scraped() -> str:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        finished = 'longjobs_attempts_finished_total{kind="sleepy",status="completed"} 3.0'
        return text if finished in text else ""

    text = wait_until(scraped, timeout=10, what="the worker's metrics to count 3 attempts")
    assert 'longjobs_attempt_duration_seconds_count{kind="sleepy"} 3.0' in text
    assert 'longjobs_queue_wait_seconds_count{kind="sleepy"} 3.0' in text
    assert "longjobs_handlers_running 0.0" in text


def test_a_worker_whose_metrics_port_is_taken_exits_with_one_line(cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = cluster.worker("--metrics-port", str(port), ready=False)
        assert worker.wait(timeout=30) == 1
    lines = worker.stderr().strip().splitlines()
    assert lines[-1].startswith(f"longjobs: cannot serve metrics on 127.0.0.1:{port}")
    assert "Traceback" not in worker.stderr()
