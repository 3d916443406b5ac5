"""``python -m bench``: run every benchmark, print a table, write JSON under bench/results/."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import (
    dashboard_scenario,
    http_scenarios,
    pg_scenarios,
    responses_scenario,
    scenarios,
    webhooks_scenario,
)
from bench.harness import ROOT, Measurement, sqlite_url
from bench.raw_sqlite import raw_limit
from tests.pg_server import PostgresServer

PG = "PostgreSQL: "
RESULTS = ROOT / "bench" / "results"


def _plan(
    tmp: Path, quick: bool, pg: Callable[[], PostgresServer]
) -> list[tuple[str, Callable[[], list[Measurement]]]]:
    drain_jobs = 2_000 if quick else 10_000
    many = 2_000 if quick else 10_000

    def lite(name: str) -> str:
        return sqlite_url(tmp, name)

    def pgdb() -> str:  # a fresh, migrated database on the run's PostgreSQL server
        return pg_scenarios.fresh_database(pg())

    streams, stream_seconds = (200, 10.0) if quick else (2_000, 25.0)
    return [
        ("raw", lambda: raw_limit(tmp)),
        (
            "drain-1",
            lambda: [
                scenarios.drain(lite("drain-1"), jobs=drain_jobs, processes=1, concurrency=256)
            ],
        ),
        (
            "drain-2",
            lambda: [
                scenarios.drain(lite("drain-2"), jobs=drain_jobs, processes=2, concurrency=256)
            ],
        ),
        (
            "io-1000",
            lambda: scenarios.io_bound(lite("io-1000"), jobs=1_000, processes=2, concurrency=500),
        ),
        (
            "io-many",
            lambda: scenarios.io_bound(lite("io-many"), jobs=many, processes=1, concurrency=many),
        ),
        ("latency", lambda: scenarios.latency(tmp, jobs=300)),
        ("latency-app", lambda: [scenarios.latency_in_process(tmp, jobs=300)]),
        ("submit", lambda: scenarios.submit(tmp, jobs=10_000)),
        ("progress", lambda: [scenarios.progress_overhead(tmp)]),
        (
            "sse-2000",
            lambda: http_scenarios.sse_streams(
                tmp, clients=streams, seconds=stream_seconds, split_worker=False
            ),
        ),
        (
            "sse-2000-split",
            lambda: http_scenarios.sse_streams(
                tmp, clients=streams, seconds=stream_seconds, split_worker=True
            ),
        ),
        (
            "post-throughput",
            lambda: http_scenarios.post_throughput(tmp, requests=2_000 if quick else 20_000),
        ),
        (
            "pollers-1000",
            lambda: http_scenarios.pollers(
                tmp, count=100 if quick else 1_000, seconds=3.0 if quick else 10.0
            ),
        ),
        (
            "responses-500",
            lambda: responses_scenario.streamed_responses(
                tmp, clients=100 if quick else 500, tokens=200, rate=50.0
            ),
        ),
        (
            "responses-500-2w",
            lambda: responses_scenario.streamed_responses(
                tmp, clients=100 if quick else 500, tokens=200, rate=50.0, worker_processes=2
            ),
        ),
        ("webhooks-one", lambda: [webhooks_scenario.one_at_a_time(lite("webhooks-1"), jobs=200)]),
        (
            "webhooks-2000",
            lambda: [
                webhooks_scenario.delivered(
                    lite("webhooks"), jobs=500 if quick else 2_000, processes=1
                )
            ],
        ),
        (
            "dashboard-100k",
            lambda: dashboard_scenario.dashboard_reads(
                lite("dashboard"), jobs=20_000 if quick else 100_000
            ),
        ),
        ("pg-raw", lambda: pg_scenarios.raw_limit(pg())),
        (
            "pg-drain-1",
            lambda: [
                scenarios.drain(pgdb(), jobs=drain_jobs, processes=1, concurrency=256, store=PG)
            ],
        ),
        (
            "pg-drain-2",
            lambda: [
                scenarios.drain(pgdb(), jobs=drain_jobs, processes=2, concurrency=256, store=PG)
            ],
        ),
        (
            "pg-io-1000",
            lambda: scenarios.io_bound(pgdb(), jobs=1_000, processes=2, concurrency=500, store=PG),
        ),
        (
            "pg-latency",
            lambda: [pg_scenarios.cross_server_latency(pg(), jobs=50 if quick else 300)],
        ),
        ("pg-cancel", lambda: [pg_scenarios.cross_server_cancel(pg(), jobs=10 if quick else 50)]),
        (
            "pg-dashboard-100k",
            lambda: dashboard_scenario.dashboard_reads(
                pgdb(), jobs=20_000 if quick else 100_000, store=PG
            ),
        ),
        (
            "pg-webhooks-2000",
            lambda: [
                webhooks_scenario.delivered(
                    pgdb(), jobs=500 if quick else 2_000, processes=2, store=PG
                )
            ],
        ),
    ]


def _settle() -> None:
    """Let the previous scenario's files reach the disk and its processes end, so that each
    scenario starts on a quiet machine."""
    os.sync()
    time.sleep(2.0)


def _table(results: list[Measurement]) -> Table:
    table = Table(title="longjobs benchmarks (SQLite unless named, this machine)")
    for column in ("scenario", "metric", "value", "target", "met"):
        table.add_column(column)
    for m in results:
        value = f"{m.value:,} {m.unit}"
        if "p99_ms" in m.details:
            latency = f"{m.details['p50_ms']} / {m.details['p99_ms']} ms"
            value = latency if m.unit == "ms" else f"{value}; {latency}"
        if "requests_per_s" in m.details and m.unit == "ms":
            value += f"; {m.details['requests_per_s']:,} req/s"
        met = "" if m.met is None else ("yes" if m.met else "NO")
        table.add_row(m.scenario, m.metric, value, m.target, met)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--quick", action="store_true", help="smaller job counts")
    options = parser.parse_args()
    console = Console(width=150)
    results: list[Measurement] = []
    with (
        tempfile.TemporaryDirectory(prefix="longjobs-bench-") as directory,
        contextlib.ExitStack() as stack,
    ):
        servers: list[PostgresServer] = []

        def pg() -> PostgresServer:  # the PostgreSQL server, started for the first scenario
            if not servers:
                servers.append(stack.enter_context(pg_scenarios.postgres()))
            return servers[0]

        for name, run in _plan(Path(directory), options.quick, pg):
            if options.only and name not in options.only:
                continue
            console.print(f"[bold]running[/bold] {name} …")
            _settle()
            results.extend(run())
    console.print(_table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = {
        "when": stamp,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "platform": platform.platform()},
        "results": [asdict(m) for m in results],
    }  # fmt: skip
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
    console.print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
