"""Load generators for the HTTP benchmarks: raw HTTP/1.1 on asyncio streams (on uvloop), so that
a request costs the client a few microseconds and the figures show the server, not the client.

Each generator is a plain function that runs its own event loop, so that ``run_in_processes``
can spread the connections over several processes; it returns a picklable report with the
client's CPU time, to show whether the client kept up.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import resource
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from longjobs.cli import tune_gc

T = TypeVar("T")

_CONNECTS_AT_ONCE = 64  # stay well under the server's listen backlog while ramping up
_TERMINAL = (b'"status":"completed"', b'"status":"failed"', b'"status":"cancelled"')


class HTTPError(Exception):
    """An answer the benchmark did not expect."""


class Connection:
    """One keep-alive HTTP/1.1 connection. Answers must carry ``Content-Length`` (all of the
    API's do, but for event streams, which ``events`` reads)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self._host = host

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, _, port = base.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def reopen_if_closed(self) -> None:
        """Connect again if the server closed this connection while it was idle (uvicorn does
        after 5 s), as HTTP clients do."""
        if self.reader.at_eof():
            self.close()
            host, _, port = self._host.partition(":")
            self.reader, self.writer = await asyncio.open_connection(host, int(port))

    def close(self) -> None:
        self.writer.close()

    def send(self, method: str, path: str, body: bytes | None = None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))

    async def head(self) -> tuple[int, bytes]:
        """The status code and the lower-cased header block of the next answer."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head[9:12]), head.lower()

    async def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes, bytes]:
        """Send one request; the status code, lower-cased header block and body of its answer."""
        self.send(method, path, body)
        status, head = await self.head()
        start = head.find(b"content-length:")
        if start < 0:
            raise HTTPError(f"{method} {path}: {status} without Content-Length")
        length = int(head[start + 15 : head.find(b"\r\n", start)])
        return status, head, await self.reader.readexactly(length)

    async def submit(self, kind: str, input_: object) -> str:
        """``POST /v1/jobs``; the new job's id."""
        body = json.dumps({"kind": kind, "input": input_}).encode()
        status, _, answer = await self.request("POST", "/v1/jobs", body)
        if status != 202:
            raise HTTPError(f"POST /v1/jobs: {status} {answer[:200]!r}")
        job_id: str = json.loads(answer)["id"]
        return job_id


def _retry_after(head: bytes) -> float:
    start = head.find(b"retry-after:")
    return 0.0 if start < 0 else float(head[start + 12 : head.find(b"\r\n", start)])


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop (installed with uvicorn[standard]) or, without it, asyncio's loop,
    with the collector tuned as the server's (a load process holding 1,000 connections would
    otherwise pause, and count its own pauses as the server's latency)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_in_processes(function: Callable[..., T], shares: list[tuple[Any, ...]]) -> list[T]:
    """``function(*share)`` for each share, each in a fresh (spawned) process, all at once."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
        futures = [pool.submit(function, *share) for share in shares]
        return [future.result() for future in futures]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the (start, end) intervals that overlap at one time."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal whole shares."""
    return [total // parts + (i < total % parts) for i in range(parts)]


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))


# -- event streams -------------------------------------------------------------------------------
@dataclass
class StreamReport:
    """What one process of stream clients saw."""

    lags: list[tuple[float, float]] = field(default_factory=list)
    """(the event's ``at``, Unix seconds; receive time - ``at``) for each progress event"""
    connected_at: float = 0.0
    """when the last stream of this process got its answer's head"""
    spans: list[tuple[float, float]] = field(default_factory=list)
    """(opened, ended), Unix seconds, of each stream that answered 200"""
    streams: int = 0
    ended: int = 0
    """streams that ended with the job's terminal status event"""
    frames: int = 0
    gaps: int = 0
    """events that arrived out of sequence (a sequence number skipped or repeated)"""
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def stream_clients(base: str, count: int, ticks: dict[str, float], start_at: float) -> StreamReport:
    """``count`` clients, each submitting one ``emit_progress`` job at ``start_at`` and then
    following its event stream over the same connection until the job's terminal event."""
    return run_loop(_stream_clients(base, count, ticks, start_at))


async def _stream_clients(
    base: str, count: int, ticks: dict[str, float], start_at: float
) -> StreamReport:
    report = StreamReport(streams=count)
    raw: list[tuple[bytes, float]] = []
    gate = asyncio.Semaphore(_CONNECTS_AT_ONCE)
    await _sleep_until(start_at)
    cpu, wall = cpu_seconds(), time.time()
    give_up = ticks["seconds"] + 60.0  # a stream that never ends fails, never hangs the run
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(_follow(base, ticks, gate, raw, report), give_up) for _ in range(count)),
        return_exceptions=True,
    )
    report.errors += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    report.cpu_seconds, report.wall_seconds = cpu_seconds() - cpu, time.time() - wall
    report.lags = [(at, received - at) for at, received in map(_parse_at, raw)]
    return report


def _parse_at(sample: tuple[bytes, float]) -> tuple[float, float]:
    return datetime.fromisoformat(sample[0].decode()).timestamp(), sample[1]


async def _follow(
    base: str,
    ticks: dict[str, float],
    gate: asyncio.Semaphore,
    raw: list[tuple[bytes, float]],
    report: StreamReport,
) -> None:
    async with gate:
        conn = await Connection.open(base)
        job_id = await conn.submit("emit_progress", ticks)
        conn.send("GET", f"/v1/jobs/{job_id}/events")
        status, _ = await conn.head()
        report.connected_at = max(report.connected_at, time.time())
    opened = time.time()
    try:
        if status != 200:
            raise HTTPError(f"GET events: {status}")
        await _read_stream(conn.reader, raw, report)
        report.spans.append((opened, time.time()))
    finally:
        conn.close()


async def _read_stream(
    reader: asyncio.StreamReader, raw: list[tuple[bytes, float]], report: StreamReport
) -> None:
    """Read the chunked SSE body; a chunk holds one or more whole frames."""
    expected = 0
    while True:
        size = int(await reader.readuntil(b"\r\n"), 16)
        chunk = await reader.readexactly(size + 2)
        received = time.time()
        if size == 0:
            return
        for frame in chunk[:-2].split(b"\n\n"):
            if not frame.startswith(b"id: "):
                continue  # retry: and keepalive comments
            report.frames += 1
            sequence = int(frame[4 : frame.index(b"\n")])
            report.gaps += sequence != expected
            expected = sequence + 1
            if b"event: progress\n" in frame:
                start = frame.index(b'"at":"') + 6
                raw.append((frame[start : frame.index(b'"', start)], received))
            elif b"event: status\n" in frame and any(t in frame for t in _TERMINAL):
                report.ended += 1


# -- request/answer loads -------------------------------------------------------------------------
@dataclass
class RequestReport:
    """What one process of request loops saw."""

    latencies: list[float] = field(default_factory=list)
    """seconds from sending a request to having its whole answer"""
    first_sent: float = 0.0
    last_answered: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    """answers by HTTP status code (and, for polls, the job's status)"""
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def count(self, answer: str) -> None:
        self.statuses[answer] = self.statuses.get(answer, 0) + 1


def submit_loops(base: str, connections: int, requests: int, start_at: float) -> RequestReport:
    """``requests`` submissions of ``noop`` jobs over ``connections`` keep-alive connections,
    each sending its next request as soon as the last one is answered."""
    return run_loop(_submit_loops(base, connections, requests, start_at))


async def _submit_loops(
    base: str, connections: int, requests: int, start_at: float
) -> RequestReport:
    conns = [await Connection.open(base) for _ in range(connections)]
    body = json.dumps({"kind": "noop", "input": None}).encode()
    for conn in conns:  # warm up: the connection, and the server's code paths
        await conn.submit("noop", None)
    left = [requests]
    report = RequestReport()

    async def loop(conn: Connection) -> None:
        while left[0] > 0:
            left[0] -= 1
            sent = time.perf_counter()
            status, _, _ = await conn.request("POST", "/v1/jobs", body)
            report.latencies.append(time.perf_counter() - sent)
            report.count(str(status))

    await _sleep_until(start_at)
    cpu, report.first_sent = cpu_seconds(), time.time()
    outcomes = await asyncio.gather(*(loop(conn) for conn in conns), return_exceptions=True)
    report.last_answered = time.time()
    report.cpu_seconds = cpu_seconds() - cpu
    report.errors += [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    for conn in conns:
        conn.close()
    return report


def poll_loops(
    base: str, pollers: int, ticks: dict[str, float], phases: list[tuple[float, float, bool]]
) -> list[RequestReport]:
    """``pollers`` clients, each submitting one ``emit_progress`` job, then polling
    ``GET /v1/jobs/{id}`` during each phase ``(start, end, paced)``: paced pollers wait the
    ``Retry-After`` of each answer (as a well-behaved client does), the others poll back to
    back. One report per phase."""
    return run_loop(_poll_loops(base, pollers, ticks, phases))


async def _poll_loops(
    base: str, pollers: int, ticks: dict[str, float], phases: list[tuple[float, float, bool]]
) -> list[RequestReport]:
    gate = asyncio.Semaphore(_CONNECTS_AT_ONCE)

    async def connect() -> tuple[Connection, str]:
        async with gate:
            conn = await Connection.open(base)
            return conn, await conn.submit("emit_progress", ticks)

    clients = await asyncio.gather(*(connect() for _ in range(pollers)))
    reports = []
    for start, end, paced in phases:
        report = RequestReport()
        await _sleep_until(start)
        cpu, report.first_sent = cpu_seconds(), time.time()
        outcomes = await asyncio.gather(
            *(_poll(conn, job_id, end, paced, report) for conn, job_id in clients),
            return_exceptions=True,
        )
        report.last_answered = time.time()
        report.cpu_seconds = cpu_seconds() - cpu
        report.errors += [
            f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)
        ]
        reports.append(report)
    for conn, _ in clients:
        conn.close()
    return reports


async def _poll(
    conn: Connection, job_id: str, end: float, paced: bool, report: RequestReport
) -> None:
    path = f"/v1/jobs/{job_id}"
    if paced:  # spread the pollers over the first interval, as clients that came at any time
        await asyncio.sleep(random.uniform(0.0, 1.0))
    await conn.reopen_if_closed()
    while time.time() < end:
        sent = time.perf_counter()
        status, head, body = await conn.request("GET", path)
        report.latencies.append(time.perf_counter() - sent)
        start = body.find(b'"status":"') + 10
        job_status = body[start : body.find(b'"', start)].decode()
        report.count(f"{status} {job_status}")
        if paced:
            await asyncio.sleep(_retry_after(head) or 1.0)
