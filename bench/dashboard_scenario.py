"""What one open dashboard asks of a server whose tenant has many jobs: the queue overview's
``GET /v1/stats`` and the jobs table's pages of ``GET /v1/jobs``, on a store of ``jobs`` jobs
that all finished within the last minutes (the stats query's worst case: every job falls in its
window) plus a thousand waiting ones."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.harness import Measurement, percentile, server, wait_until_drained, workers
from bench.scenarios import app_on, enqueue

ROUNDS = 30


def dashboard_reads(url: str, *, jobs: int, store: str = "") -> list[Measurement]:
    """Fill the store (drained by two workers), then time each read the dashboard makes."""
    with workers(url, 2, 256):
        for _ in range(jobs // 10_000 or 1):
            asyncio.run(enqueue(url, "noop", min(jobs, 10_000)))
        wait_until_drained(url, timeout=600)
    asyncio.run(_waiting(url, 1_000))
    with server(url) as base, httpx.Client(base_url=base, timeout=60) as client:
        deep = _cursor_after(client, pages=100)
        reads: dict[str, tuple[str, dict[str, str | int]]] = {
            "queue overview, GET /v1/stats (a fresh reading)": ("/v1/stats", {"minutes": 15}),
            "jobs table, first page of 50": ("/v1/jobs", {"limit": 50}),
            "jobs table, page 101 of 50 (by cursor)": ("/v1/jobs", {"limit": 50, "cursor": deep}),
            "jobs table, pending only, first page": (
                "/v1/jobs",
                {"limit": 50, "status": "pending"},
            ),
            "jobs table, failed only (there are none: the worst case)": (
                "/v1/jobs",
                {"limit": 50, "status": "failed"},
            ),
            "the page itself, GET /": ("/", {}),
        }
        return [
            _timed(client, name, path, params, jobs, store)
            for name, (path, params) in reads.items()
        ]


async def _waiting(url: str, count: int) -> None:
    """``count`` jobs due in an hour: pending while the reads are timed."""
    async with app_on(url) as app:
        new = [app.prepare("noop", None, delay_seconds=3600) for _ in range(count)]
        await (await app.open()).create_jobs(new)


def _cursor_after(client: httpx.Client, *, pages: int) -> str:
    cursor = None
    for _ in range(pages):
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        cursor = client.get("/v1/jobs", params=params).json()["next_cursor"]
    assert cursor is not None
    return str(cursor)


def _timed(
    client: httpx.Client, name: str, path: str, params: dict[str, str | int], jobs: int, store: str
) -> Measurement:
    client.get(path, params=params).raise_for_status()  # warm
    took = []
    for number in range(ROUNDS):
        if "minutes" in params:  # another window each time: the server's 2 s reuse never answers
            params = {**params, "minutes": 16 + number}
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        took.append((time.perf_counter() - start) * 1000)
    p50, p99 = percentile(took, 50), percentile(took, 99)
    return Measurement(
        scenario=f"{store}dashboard reads, {jobs:,} jobs: {name}",
        metric="p50 / p99",
        value=round(p50, 2),
        unit="ms",
        details={"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)},
    )
