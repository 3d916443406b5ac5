"""The HTTP benchmarks of issue 3: many event streams, submission throughput, many pollers.

Each runs a real ``longjobs serve`` process on a fresh SQLite file and drives it from separate
load processes (``bench.http_load``). The machine's cores are shared by the server, its workers
and the load processes, so each measurement also says how busy the server and the clients were.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import (
    Measurement,
    Watch,
    percentile,
    raise_open_files_limit,
    server_process,
    sqlite_url,
    workers,
)
from bench.http_load import (
    RequestReport,
    most_at_once,
    poll_loops,
    run_in_processes,
    split,
    stream_clients,
    submit_loops,
)

MiB = 1024 * 1024
_SPAWN_SECONDS = 3.0  # time for the load processes to start before they begin together


def _milliseconds(samples: list[float]) -> dict[str, object]:
    return {
        "p50_ms": round(percentile(samples, 50) * 1000, 1),
        "p99_ms": round(percentile(samples, 99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
        "samples": len(samples),
    }


def _open_limits(streams: int) -> dict[str, str]:
    """The settings the benchmark server needs. In open mode (no API keys, as here) every request
    counts as the one caller ``open``: the per-key stream cap (default 20) applies to all
    streams together, while the rate limit applies only to keyed callers; both are set high."""
    return {
        "LONGJOBS_MAX_STREAMS_PER_KEY": str(streams + 100),
        "LONGJOBS_RATE_LIMIT_PER_SECOND": "1000000",
        "LONGJOBS_RATE_LIMIT_BURST": "1000000",
    }


def sse_streams(
    tmp: Path, *, clients: int, seconds: float, split_worker: bool, load_processes: int = 2
) -> list[Measurement]:
    """``clients`` SSE clients on one server process, each on its own running job that reports
    progress 5 times a second for ``seconds``. Delivery lag = the client's receive time - the
    event's ``at`` (the store's clock when the worker wrote it; same machine, same clock), over
    the progress events stamped from 1 s after the last stream was opened. Each client submits
    its job and follows its stream on one connection; ``load_processes`` share the clients.

    The server process serves every stream. With ``split_worker`` it runs ``--no-worker`` and
    one separate ``longjobs worker`` process runs the jobs; otherwise the server's in-process
    worker runs them too (``longjobs serve``'s default), so one process does it all.

    Settings: see ``_open_limits``; the worker runs all jobs at once (concurrency = clients).
    This process first raises its soft limit on open files to the hard limit; the server, the
    worker and the load processes inherit it.
    """
    files = raise_open_files_limit()
    url = sqlite_url(tmp, f"sse-{clients}-{'split' if split_worker else 'one'}")
    env = {**_open_limits(clients), "LONGJOBS_CONCURRENCY": str(clients)}
    options = ("--no-worker",) if split_worker else ("--concurrency", str(clients))
    ticks = {"seconds": seconds, "per_second": 5.0}
    with (
        workers(url, 1 if split_worker else 0, clients),
        server_process(url, *options, env=env) as (base, proc),
        Watch(proc) as watch,
    ):
        start_at = time.time() + _SPAWN_SECONDS
        shares = [(base, n, ticks, start_at) for n in split(clients, load_processes)]
        reports = run_in_processes(stream_clients, shares)
    connected = max(r.connected_at for r in reports)
    lags = [lag for r in reports for at, lag in r.lags if at >= connected + 1.0]
    if not lags:
        raise RuntimeError(f"no progress event arrived: {[r.errors[:3] for r in reports]}")
    end = max(at for r in reports for at, _ in r.lags)
    ended = sum(r.ended for r in reports)
    at_once = most_at_once([span for r in reports for span in r.spans])
    where = "a separate worker process" if split_worker else "the server's in-process worker"
    name = f"{clients:,} SSE streams on one server, 5 progress events/s each, jobs on {where}"
    details = {
        **_milliseconds(lags),
        "streams_open_at_once": at_once,
        "streams_ended_normally": ended,
        # The worker writes at most one progress event per job per flush: fewer than the
        # handler's 5 a second means that the flushes fell behind.
        "progress_events_per_stream": round(sum(len(r.lags) for r in reports) / clients, 1),
        "progress_calls_per_stream": round(seconds * 5),
        "delivered_events_per_s": round(len(lags) / (end - connected - 1.0)),
        "errors": sum(len(r.errors) for r in reports),
        "first_errors": [e for r in reports for e in r.errors][:3],
        "sequence_gaps": sum(r.gaps for r in reports),
        "frames": sum(r.frames for r in reports),
        "ramp_up_s": round(connected - start_at, 2),
        "server_cores_busy": round(watch.cores_busy(connected + 1.0, end), 2),
        "client_cores_busy": round(sum(r.cpu_seconds / r.wall_seconds for r in reports), 2),
        "load_processes": load_processes,
        "open_files_limit": files,
        "server_peak_fds": watch.peak_fds,
    }
    p99 = percentile(lags, 99) * 1000
    return [
        Measurement(
            scenario=name,
            metric="delivery lag p50 / p99",
            value=round(p99, 1),
            unit="ms",
            target="p99 ≤ 250",
            met=p99 <= 250 and ended == clients and at_once == clients,
            details=details,
        ),
        Measurement(
            scenario=name,
            metric="server RSS (peak)",
            value=round(watch.peak_rss / MiB, 1),
            unit="MiB",
        ),
    ]


def _latency_details(reports: list[RequestReport]) -> tuple[list[float], dict[str, object]]:
    latencies = [s for r in reports for s in r.latencies]
    start, end = min(r.first_sent for r in reports), max(r.last_answered for r in reports)
    statuses: dict[str, int] = {}
    for report in reports:
        for answer, n in report.statuses.items():
            statuses[answer] = statuses.get(answer, 0) + n
    details = {
        **_milliseconds(latencies),
        "requests_per_s": round(len(latencies) / (end - start)),
        "seconds": round(end - start, 2),
        "answers": statuses,
        "errors": sum(len(r.errors) for r in reports),
        "first_errors": [e for r in reports for e in r.errors][:3],
        "client_cores_busy": round(sum(r.cpu_seconds for r in reports) / (end - start), 2),
    }
    return latencies, details


def post_throughput(
    tmp: Path, *, requests: int, connections: int = 64, load_processes: int = 1
) -> list[Measurement]:
    """``POST /v1/jobs`` (a ``noop`` job, no input) over ``connections`` keep-alive connections,
    each sending its next request when the last is answered, to a ``--no-worker`` server: the
    API's submission rate. The jobs stay pending (below the default ``max_pending_jobs``)."""
    url = sqlite_url(tmp, "post-throughput")
    with server_process(url, "--no-worker", env=_open_limits(0)) as (base, proc), Watch(proc) as w:
        start_at = time.time() + _SPAWN_SECONDS
        shares = zip(
            split(connections, load_processes), split(requests, load_processes), strict=True
        )
        reports = run_in_processes(submit_loops, [(base, c, r, start_at) for c, r in shares])
    latencies, details = _latency_details(reports)
    start, end = min(r.first_sent for r in reports), max(r.last_answered for r in reports)
    rate = len(latencies) / (end - start)
    accepted = details["answers"] == {"202": requests}
    details |= {"server_cores_busy": round(w.cores_busy(start, end), 2), "server_rss_mib":
                round(w.peak_rss / MiB, 1), "connections": connections,
                "load_processes": load_processes}  # fmt: skip
    return [
        Measurement(
            scenario=f"POST /v1/jobs, {requests:,} over {connections} connections, API only",
            metric="throughput",
            value=round(rate),
            unit="submits/s",
            target="≥ 3,000",
            met=rate >= 3000 and accepted,
            details=details,
        )
    ]


def pollers(tmp: Path, *, count: int, seconds: float, load_processes: int = 1) -> list[Measurement]:
    """``count`` clients, each polling ``GET /v1/jobs/{id}`` on its own running job (reporting
    progress once a second, run by a separate worker process) for ``seconds``, twice: paced
    by each answer's ``Retry-After`` (1 s), as the API asks of clients, where the target
    applies; then back to back, which shows the server's capacity. The server is ``--no-worker``,
    so it serves only the polls."""
    files = raise_open_files_limit()
    url = sqlite_url(tmp, f"pollers-{count}")
    ticks = {"seconds": 2 * seconds + 30.0, "per_second": 1.0}
    with (
        workers(url, 1, count),
        server_process(url, "--no-worker", env=_open_limits(0)) as (base, proc),
        Watch(proc) as watch,
    ):
        start = time.time() + _SPAWN_SECONDS + 1.0 + count / 1000  # once every job is running
        phases = [
            (start, start + seconds, True),
            (start + seconds + 1, start + 2 * seconds + 1, False),
        ]
        shares = [(base, n, ticks, phases) for n in split(count, load_processes)]
        by_process = run_in_processes(poll_loops, shares)
    out = []
    for phase, (begin, end, paced) in enumerate(phases):
        latencies, details = _latency_details([reports[phase] for reports in by_process])
        details |= {"server_cores_busy": round(watch.cores_busy(begin, end), 2),
                    "open_files_limit": files, "load_processes": load_processes}  # fmt: skip
        p99 = percentile(latencies, 99) * 1000
        how = "paced by Retry-After" if paced else "back to back"
        out.append(
            Measurement(
                scenario=f"{count:,} pollers of GET /v1/jobs/{{id}} on running jobs, {how}",
                metric="latency p50 / p99",
                value=round(p99, 1),
                unit="ms",
                target="p99 ≤ 200" if paced else "",
                met=p99 <= 200 if paced else None,
                details=details,
            )
        )
    return out
