"""Benchmarks on PostgreSQL: the run's own throwaway server (the machine's binaries, as the tests
start it), a fresh database per scenario, worker and API processes as in production.

The raw limit is the same queue cycle (insert, claim with ``FOR UPDATE SKIP LOCKED``, complete)
with nothing of longjobs around it, measured on the same server in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import asyncpg
import httpx

from bench.harness import Measurement, percentile, server_process, workers
from tests.pg_server import PostgresServer, find_bindir

MiB = 1024 * 1024


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (make services installs them)")
    with PostgresServer(bindir) as server:
        yield server


def fresh_database(server: PostgresServer) -> str:
    """A new database on ``server`` with longjobs' schema (so no process migrates it while it is
    being measured)."""
    url = server.dsn(asyncio.run(server.create_database()))
    asyncio.run(_migrated(url))
    return url


async def _migrated(url: str) -> None:
    from longjobs.backends.postgres_db import migrate

    await migrate(url)


# -- the raw limit -------------------------------------------------------------------------------
async def _raw_cycle(url: str, batch: int, rounds: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS q (id bigserial PRIMARY KEY, status text NOT NULL);"
            "CREATE INDEX IF NOT EXISTS q_pending ON q (id) WHERE status = 'pending';"
            "TRUNCATE q"
        )
        start = time.perf_counter()
        for _ in range(rounds):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO q (status) SELECT 'pending' FROM generate_series(1, $1)", batch
                )
            async with conn.transaction():
                ids = await conn.fetch(
                    "UPDATE q SET status = 'running' WHERE id IN (SELECT id FROM q "
                    "WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) "
                    "RETURNING id",
                    batch,
                )
            async with conn.transaction():
                await conn.execute(
                    "UPDATE q SET status = 'completed' WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in ids],
                )
        return batch * rounds / (time.perf_counter() - start)
    finally:
        await conn.close()


def raw_limit(server: PostgresServer) -> list[Measurement]:
    url = fresh_database(server)
    single = asyncio.run(_raw_cycle(url, 1, 2000))
    batched = asyncio.run(_raw_cycle(url, 100, 300))
    name = "raw PostgreSQL insert + claim + complete (FOR UPDATE SKIP LOCKED), one connection"
    return [
        Measurement(name, "one row per commit", round(single), "jobs/s"),
        Measurement(name, "batches of 100", round(batched), "jobs/s"),
    ]


# -- submit on one server, watch on another ------------------------------------------------------
def cross_server_latency(server: PostgresServer, *, jobs: int) -> Measurement:
    """Two ``serve --no-worker`` processes and one worker on one database; ``jobs`` times in a
    row: submit a no-op through server B, follow its SSE stream on server A (opened right
    after the 202), and time from sending the submission to the terminal event arriving."""
    url = fresh_database(server)
    samples: list[float] = []
    with (
        workers(url, 1, 64),
        server_process(url, "--no-worker") as (base_a, _),
        server_process(url, "--no-worker") as (base_b, _),
        httpx.Client(base_url=base_a, timeout=30) as via_a,
        httpx.Client(base_url=base_b, timeout=30) as via_b,
    ):
        for _ in range(jobs):
            sent = time.perf_counter()
            response = via_b.post("/v1/jobs", json={"kind": "noop"})
            job_id = response.json()["id"]
            with via_a.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:") and _terminal(line):
                        samples.append(time.perf_counter() - sent)
                        break
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    return Measurement(
        scenario=(
            f"PostgreSQL: submit through server B → completion seen on server A's SSE stream, "
            f"{jobs} in a row (one worker process)"
        ),
        metric="latency p50 / p99",
        value=round(p50, 1),
        unit="ms",
        details={"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "samples": len(samples)},
    )


def cross_server_cancel(server: PostgresServer, *, jobs: int) -> Measurement:
    """Two ``serve --no-worker`` processes and one worker whose heartbeats are 30 s apart; for
    each of ``jobs`` long jobs, once it runs: cancel it through server B, and time until server
    A answers it ``cancelled`` (its handler stopped). Far under a heartbeat: the request reached
    the worker by notification."""
    url = fresh_database(server)
    slow = {"LONGJOBS_LEASE_SECONDS": "90"}
    samples: list[float] = []
    with (
        workers(url, 1, 64, env=slow),
        server_process(url, "--no-worker") as (base_a, _),
        server_process(url, "--no-worker") as (base_b, _),
        httpx.Client(base_url=base_a, timeout=30) as via_a,
        httpx.Client(base_url=base_b, timeout=30) as via_b,
    ):
        for _ in range(jobs):
            body = {"kind": "emit_progress", "input": {"seconds": 60, "per_second": 1}}
            job_id = via_a.post("/v1/jobs", json=body).json()["id"]
            while via_a.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
                time.sleep(0.01)
            asked = time.perf_counter()
            via_b.post(f"/v1/jobs/{job_id}/cancel")
            job = via_a.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
            while job["status"] != "cancelled":
                job = via_a.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
            samples.append(time.perf_counter() - asked)
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    return Measurement(
        scenario=(
            f"PostgreSQL: cancel through server B → cancelled on server A, {jobs} running jobs "
            "(heartbeats 30 s apart)"
        ),
        metric="latency p50 / p99",
        value=round(p99, 1),
        unit="ms",
        target="≤ 1,000",
        met=p99 <= 1000,
        details={"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "samples": len(samples)},
    )


def _terminal(line: str) -> bool:
    event = json.loads(line.removeprefix("data:").strip())
    return event.get("type") == "status" and event.get("status") in {
        "completed",
        "failed",
        "cancelled",
    }
