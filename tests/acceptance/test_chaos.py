"""Faults injected into real worker processes: SIGKILL chaos (R1) and poison jobs (R10), small."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.checker import Fault, check_run, integrity_check
from tests.acceptance.harness import (
    LEASE_SECONDS,
    SWEEP_INTERVAL,
    Cluster,
    LongjobsProcess,
    get_job,
    submit,
    submit_many,
    unfinished_count,
    wait_all_terminal,
    wait_terminal,
    wait_until,
    wait_worker_ready,
)
from tests.acceptance.ledger import read_ledger

# sqlite_only: looks inside the SQLite file; PostgreSQL's chaos is in test_postgres_cluster.
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120), pytest.mark.sqlite_only]

JOBS = 200
CONCURRENCY = 4
KILL_EVERY = 2.0
CHAOS_SECONDS = 14.0
DRAIN_SECONDS = 60.0


@pytest.fixture
def api_only(cluster: Cluster) -> Iterator[httpx.Client]:
    server = cluster.serve(worker=False)
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


def start_workers(cluster: Cluster, count: int) -> list[LongjobsProcess]:
    workers = [cluster.worker(concurrency=CONCURRENCY, ready=False) for _ in range(count)]
    for worker in workers:
        wait_worker_ready(worker)
    return workers


def run_chaos(
    cluster: Cluster, client: httpx.Client, victims: list[LongjobsProcess], rng: random.Random
) -> list[Fault]:
    """Every KILL_EVERY seconds SIGKILL a random victim's process group and start a replacement
    at once, for CHAOS_SECONDS or until no job is left to interrupt."""
    faults = []
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end and unfinished_count(client) > 0:
        time.sleep(KILL_EVERY)
        slot = rng.randrange(len(victims))
        victim = victims[slot]
        faults.append(Fault(pid=victim.pid, at=victim.kill()))
        victims[slot] = cluster.worker(concurrency=CONCURRENCY, ready=False)
    return faults


def test_sigkill_chaos_loses_no_job_and_commits_each_once(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    rng = random.Random(1)
    primaries = start_workers(cluster, 2)
    spare = start_workers(cluster, 1)
    inputs = [{"steps": 10, "step_ms": rng.randint(40, 120)} for _ in range(JOBS)]
    job_ids = submit_many(api_only, "ledger_job", inputs)
    started = time.monotonic()

    faults = run_chaos(cluster, api_only, primaries, rng)
    chaos_done = time.monotonic()
    wait_all_terminal(api_only, timeout=DRAIN_SECONDS)
    drained = time.monotonic()

    report = check_run(
        api_only,
        job_ids,
        ledger_path=cluster.ledger_path,
        db_path=None,
        faults=faults,
        attribution_window=60.0,
    )
    locked = cluster.stderr_containing("database is locked")
    tracebacks = cluster.stderr_containing("Traceback")
    cluster.stop_all()
    report.integrity = integrity_check(cluster.db_path)
    report.write(
        cluster.directory / "report.json",
        parameters={
            "jobs": JOBS,
            "workers": "2 killed at random + 1 spare",
            "concurrency": CONCURRENCY,
            "kill_every": KILL_EVERY,
            "lease_seconds": LEASE_SECONDS,
            "sweep_interval": SWEEP_INTERVAL,
        },
        timings={
            "chaos_seconds": round(chaos_done - started, 2),
            "drain_seconds": round(drained - chaos_done, 2),
        },
        spare_pid=spare[0].pid,
    )
    assert report.violations() == []
    assert report.integrity == "ok"
    assert report.completed == JOBS
    assert len(faults) >= 3, "the jobs finished before the chaos could hit them"
    assert report.rescued > 0, "no job was rescued from a killed worker"
    assert report.resumed > 0, "no rescued job resumed from its checkpoint"
    assert report.extra_starts <= len(faults) * CONCURRENCY
    # Liveness, generously: a killed worker's jobs are back in the queue within L + sweep + 1 s
    # when the machine is idle (RELIABILITY.md F1); 2 busy cores get twice that and more.
    assert report.requeue_latency, "no requeue of a killed attempt was recorded"
    assert max(report.requeue_latency) <= 2 * (LEASE_SECONDS + SWEEP_INTERVAL + 1) + 3
    assert locked == []
    assert tracebacks == []


def test_poison_jobs_fail_after_max_attempts_and_good_jobs_complete(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    workers = start_workers(cluster, 2)
    good = [submit(api_only, "ledger_job", {"steps": 3, "step_ms": 20}) for _ in range(50)]
    poison = [submit(api_only, "exit_process") for _ in range(4)]
    good += [submit(api_only, "ledger_job", {"steps": 3, "step_ms": 20}) for _ in range(10)]
    deaths: list[Fault] = []

    def supervise() -> bool:
        """Restart any worker that died; True once every job is terminal."""
        for slot, worker in enumerate(workers):
            if not worker.alive:
                deaths.append(Fault(pid=worker.pid, at=time.time(), kind="exit"))
                workers[slot] = cluster.worker(concurrency=CONCURRENCY, ready=False)
        return unfinished_count(api_only) == 0

    wait_until(supervise, timeout=90, interval=0.1, what="every job to be terminal")

    ledger = read_ledger(cluster.ledger_path)
    poison_starts = 0
    for job_id in poison:
        job = api_only.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "failed"
        assert job["error"]["type"] == "attempts_exhausted"
        assert job["max_attempts"] == 2
        assert job["attempt"] == 2
        # An attempt claimed together with another poison job can die before it starts.
        starts = [line for line in ledger if line["job_id"] == job_id]
        assert len(starts) <= 2
        poison_starts += len(starts)
    assert poison_starts >= 1
    report = check_run(
        api_only, good, ledger_path=cluster.ledger_path, db_path=cluster.db_path, faults=deaths
    )
    assert report.violations() == []
    assert report.completed == len(good)
    assert 1 <= len(deaths) <= len(poison) * 2, "a worker died without a poison job, or looped"


def pause_outside_write_lock(process: LongjobsProcess, db_path: Path) -> float:
    """SIGSTOP ``process`` at a moment it does not hold the SQLite write lock; returns when.

    A process paused inside a write transaction blocks every writer of the file until it runs
    again: that is the nature of the file lock, not a fencing question, so such a pause is undone
    and tried again a moment later."""
    for _ in range(50):
        at = time.time()
        process.signal_group(signal.SIGSTOP)
        probe = sqlite3.connect(db_path, timeout=0.5, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return at
        except sqlite3.OperationalError:
            process.signal_group(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError(f"{process.name} held the write lock at every try")


def test_a_paused_worker_cannot_overwrite_the_attempt_that_rescued_its_job(
    cluster: Cluster, api_only: httpx.Client
) -> None:
    zombie = cluster.worker(concurrency=1)
    job_id = submit(api_only, "ledger_job", {"steps": 40, "step_ms": 100})
    wait_until(
        lambda: get_job(api_only, job_id)["progress"] >= 0.1, timeout=30, what="some progress"
    )

    paused_at = pause_outside_write_lock(zombie, cluster.db_path)
    try:
        rescuer = cluster.worker(concurrency=1)
        job = wait_terminal(api_only, job_id, timeout=60)
    finally:
        zombie.signal_group(signal.SIGCONT)
    wait_until(
        lambda: "lease_lost" in zombie.stderr(), timeout=15, what="the zombie to learn it lost"
    )

    assert job["status"] == "completed"
    assert job["attempt"] == 2
    assert job["result"]["pid"] == rescuer.pid
    assert job["result"]["resumed_from"] > 0
    report = check_run(
        api_only,
        [job_id],
        ledger_path=cluster.ledger_path,
        db_path=cluster.db_path,
        faults=[Fault(pid=zombie.pid, at=paused_at, kind="sigstop")],
    )
    assert report.violations() == []
    assert get_job(api_only, job_id) == job, "the zombie's late writes changed the finished job"
    assert zombie.alive, "a zombie that lost its lease keeps serving other jobs"
