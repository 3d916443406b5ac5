"""Issue 6's benchmark: many background responses streamed at once, token by token.

``clients`` clients each create a background response with ``stream: true`` on one ``longjobs
serve --no-worker`` and read its events; one ``longjobs worker`` runs every response job, each
streaming ``tokens`` tokens from the local test-double upstream (``tests.fake_upstream``, its
own process) at ``rate`` tokens per second. The servers look for each other's commits every
20 ms (``LONGJOBS_POLL_INTERVAL``), the setting for token streams.

Token delay: for each token, the time the client read the delta holding it minus the time the
upstream double sent it (``time.monotonic()``, which is system-wide on Linux, so the three
processes' clocks agree). It covers the worker's SDK read, its coalescing of deltas into one
write per flush interval, the store, the API server's stream and the client's read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import (
    ROOT,
    Measurement,
    Watch,
    free_port,
    percentile,
    raise_open_files_limit,
    server_process,
    sqlite_url,
    workers,
)
from bench.http_load import Connection, cpu_seconds, run_in_processes, run_loop, split

MiB = 1024 * 1024
_SPAWN_SECONDS = 3.0
_CONNECTS_AT_ONCE = 64


@dataclass
class ClientReport:
    """What one load process saw: per response, each token index and when it arrived."""

    received: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def response_clients(base: str, prompts: list[str], start_at: float) -> ClientReport:
    return run_loop(_clients(base, prompts, start_at))


async def _clients(base: str, prompts: list[str], start_at: float) -> ClientReport:
    report = ClientReport()
    gate = asyncio.Semaphore(_CONNECTS_AT_ONCE)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu, wall = cpu_seconds(), time.time()
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(_one(base, p, gate, report), 120.0) for p in prompts),
        return_exceptions=True,
    )
    report.errors += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    report.cpu_seconds, report.wall_seconds = cpu_seconds() - cpu, time.time() - wall
    return report


async def _one(base: str, prompt: str, gate: asyncio.Semaphore, report: ClientReport) -> None:
    body = {"model": "double", "input": prompt, "background": True, "stream": True}
    async with gate:
        conn = await Connection.open(base)
        conn.send("POST", "/v1/responses", json.dumps(body).encode())
        status, _ = await conn.head()
    arrived = report.received.setdefault(prompt, [])
    try:
        if status != 200:
            raise RuntimeError(f"POST /v1/responses: {status}")
        reader = conn.reader
        while True:
            size = int(await reader.readuntil(b"\r\n"), 16)
            chunk = await reader.readexactly(size + 2)
            now = time.monotonic()
            if size == 0:
                return
            for frame in chunk[:-2].split(b"\n\n"):
                if b"event: response.output_text.delta\n" in frame:
                    data = json.loads(frame[frame.index(b"data: ") + 6 :])
                    for token in data["delta"].split():
                        arrived.append((int(token.removeprefix("tok")), now))
                elif b"event: response.completed\n" in frame:
                    report.completed += 1
    finally:
        conn.close()


def streamed_responses(
    tmp: Path,
    *,
    clients: int,
    tokens: int,
    rate: float,
    worker_processes: int = 1,
    load_processes: int = 2,
) -> list[Measurement]:
    files = raise_open_files_limit()
    url = sqlite_url(tmp, f"responses-{clients}")
    port = free_port()
    double = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(port),
         "--tokens", str(tokens), "--rate", str(rate)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        "LONGJOBS_UPSTREAM_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "LONGJOBS_MAX_STREAMS_PER_KEY": str(clients + 100),
        "LONGJOBS_MAX_PENDING_JOBS": str(clients * 10),
        # Streams of tokens want the API server to look for the workers' commits more often
        # than the default 50 ms (README, Performance): 20 ms costs it ~0.03 core here.
        "LONGJOBS_POLL_INTERVAL": "0.02",
    }
    try:
        _wait_listening(port)
        with (
            workers(url, worker_processes, clients // worker_processes + 8, env) as procs,
            server_process(url, "--no-worker", env=env) as (base, server),
            Watch(server) as server_watch,
            contextlib.ExitStack() as watches,
            Watch(double) as double_watch,
        ):
            worker_watches = [watches.enter_context(Watch(proc)) for proc in procs]
            start_at = time.time() + _SPAWN_SECONDS
            prompts = [f"bench-{i}" for i in range(clients)]
            shares, at = [], 0
            for n in split(clients, load_processes):
                shares.append((base, prompts[at : at + n], start_at))
                at += n
            reports = run_in_processes(response_clients, shares)
            ended = time.time()
            records = httpx.get(f"http://127.0.0.1:{port}/_records", timeout=30).json()["records"]
    finally:
        double.terminate()
        double.wait(10)
    sent = {r["prompt"]: (r["first_token"], r["sent_at"]) for r in records}
    all_open = max((r["opened_at"] for r in records), default=0.0)
    delays: list[float] = []
    steady: list[float] = []  # tokens sent once every stream was open for a second
    begun = min((r["opened_at"] for r in records), default=0.0)
    by_second: dict[int, list[float]] = {}
    received_tokens = 0
    for report in reports:
        for prompt, arrivals in report.received.items():
            first, sent_at = sent.get(prompt, (0, []))
            received_tokens += len(arrivals)
            for index, received in arrivals:
                i = index - first
                if 0 <= i < len(sent_at):
                    delays.append(received - sent_at[i])
                    by_second.setdefault(int(sent_at[i] - begun), []).append(delays[-1])
                    if sent_at[i] >= all_open + 1.0:
                        steady.append(delays[-1])
    completed = sum(r.completed for r in reports)
    errors = [e for r in reports for e in r.errors]
    if not delays:
        raise RuntimeError(f"no token arrived: {errors[:3]}")
    p99 = percentile(delays, 99) * 1000
    name = (
        f"{clients} background responses streamed at once, {tokens} tokens each at "
        f"{rate:g} tokens/s from a local upstream (API server + {worker_processes} worker "
        f"process{'es' if worker_processes > 1 else ''})"
    )
    details = {
        "p50_ms": round(percentile(delays, 50) * 1000, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(delays) * 1000, 1),
        "steady_p50_ms": round(percentile(steady, 50) * 1000, 1) if steady else None,
        "steady_p99_ms": round(percentile(steady, 99) * 1000, 1) if steady else None,
        "steady_tokens": len(steady),
        "ramp_up_s": round(all_open - begun, 2),
        "p99_ms_by_second": [
            round(percentile(by_second[second], 99) * 1000) for second in sorted(by_second)
        ],
        "tokens_received": received_tokens,
        "tokens_expected": clients * tokens,
        "responses_completed": completed,
        "errors": len(errors),
        "first_errors": errors[:3],
        "client_cores_busy": round(sum(r.cpu_seconds / r.wall_seconds for r in reports), 2),
        "server_cores_busy": round(server_watch.cores_busy(start_at, ended), 2),
        "worker_cores_busy": [round(w.cores_busy(start_at, ended), 2) for w in worker_watches],
        "upstream_double_cores_busy": round(double_watch.cores_busy(start_at, ended), 2),
        "open_files_limit": files,
    }
    all_done = completed == clients and received_tokens == clients * tokens
    return [
        Measurement(
            scenario=name,
            metric="token delay upstream → client p99",
            value=round(p99, 1),
            unit="ms",
            target="p99 ≤ 250, all complete",
            met=p99 <= 250 and all_done,
            details=details,
        ),
        Measurement(name, "API server RSS (peak)", round(server_watch.peak_rss / MiB, 1), "MiB"),
        Measurement(
            name,
            f"worker RSS (peak, {worker_processes} process{'es' if worker_processes > 1 else ''})",
            round(sum(w.peak_rss for w in worker_watches) / MiB, 1),
            "MiB",
        ),
    ]


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_records", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the upstream double did not start")
