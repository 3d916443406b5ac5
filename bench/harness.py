"""What every benchmark needs: fresh databases, worker and server processes, measurements."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    """One figure: what was measured, its value, and the target it is held against."""

    scenario: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    details: dict[str, object] = field(default_factory=dict)


def sqlite_url(directory: Path, name: str) -> str:
    path = directory / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def db_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A longjobs subprocess whose stderr is read in the background (so it never blocks)."""

    def __init__(
        self, args: list[str], url: str, ready_marker: str, env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, **(env or {}), "LONGJOBS_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "longjobs.cli", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        self._marker = ready_marker
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            if self._marker in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError("process did not start:\n" + "".join(self.lines[-20:]))

    def rss(self) -> int:
        with contextlib.suppress(psutil.Error):
            return int(psutil.Process(self.popen.pid).memory_info().rss)
        return 0

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def workers(
    url: str, count: int, concurrency: int, env: dict[str, str] | None = None
) -> Iterator[list[Process]]:
    args = ["worker", "bench.apps:app", "--concurrency", str(concurrency), "--log-level", "info"]
    procs = [Process(args, url, "started", env) for _ in range(count)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@contextlib.contextmanager
def server(url: str) -> Iterator[str]:
    with server_process(url) as (base, _):
        yield base


@contextlib.contextmanager
def server_process(
    url: str, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Process]]:
    """``longjobs serve bench.apps:app`` with ``options`` (e.g. ``--no-worker``) and extra
    environment: its base URL and its process."""
    port = free_port()
    args = ["serve", "bench.apps:app", "--port", str(port), "--log-level", "info", *options]
    proc = Process(args, url, "Application startup complete", env)
    try:
        proc.wait_ready()
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (the server and load
    processes started afterwards inherit it); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # Linux's usual nr_open
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_until_drained(url: str, *, timeout: float, sample: Process | None = None) -> int:
    """Block until no job is pending or running (SQLite or PostgreSQL); returns the largest
    RSS seen in ``sample``."""
    deadline = time.monotonic() + timeout
    peak = 0
    with _Store(url) as store:
        while time.monotonic() < deadline:
            busy = store.value(
                "SELECT EXISTS(SELECT 1 FROM jobs WHERE status = 'pending') "
                "OR EXISTS(SELECT 1 FROM jobs WHERE status = 'running')"
            )
            if sample is not None:
                peak = max(peak, sample.rss())
            if not busy:
                return peak
            time.sleep(0.02)
    raise TimeoutError(f"jobs still running after {timeout} s")


def finished_span(url: str, since: float) -> tuple[float, int]:
    """Seconds from ``since`` to the last finish, and how many jobs completed."""
    with _Store(url) as store:
        last = store.value("SELECT max(finished_at) FROM jobs")
        completed = store.value("SELECT count(*) FROM jobs WHERE status = 'completed'")
    return float(last) - since, int(completed or 0)


class _Store:
    """One-value reads of a SQLite file or a PostgreSQL database, from synchronous code."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._sqlite: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: asyncpg.Connection[asyncpg.Record] | None = None

    def __enter__(self) -> _Store:
        if self._url.startswith("sqlite:"):
            self._sqlite = sqlite3.connect(db_path(self._url), timeout=30)
        else:
            self._loop = asyncio.new_event_loop()
            self._pg = self._loop.run_until_complete(asyncpg.connect(self._url))
        return self

    def value(self, sql: str) -> Any:
        if self._sqlite is not None:
            return self._sqlite.execute(sql).fetchone()[0]
        assert self._loop is not None
        assert self._pg is not None
        return self._loop.run_until_complete(self._pg.fetchval(sql))

    def __exit__(self, *exc_info: object) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._loop is not None and self._pg is not None:
            self._loop.run_until_complete(self._pg.close())
            self._loop.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


class Watch:
    """Samples a process in a thread while in use (``with``): the peaks of its RSS and open file
    descriptors, and its CPU time, to tell how busy it was during any stretch of the run."""

    def __init__(self, proc: Process | subprocess.Popen[Any], interval: float = 0.1) -> None:
        pid = proc.pid if isinstance(proc, subprocess.Popen) else proc.popen.pid
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_rss = 0
        self.peak_fds = 0
        self._cpu: list[tuple[float, float]] = []  # (Unix time, CPU seconds used so far)

    def _sample(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, int(self._process.memory_info().rss))
                self.peak_fds = max(self.peak_fds, self._process.num_fds())
                times = self._process.cpu_times()
                self._cpu.append((time.time(), times.user + times.system))
            if self._stop.wait(self._interval):
                return

    def cores_busy(self, start: float, end: float) -> float:
        """CPU seconds per second (1.0 = one core) used between the Unix times ``start`` and
        ``end``, from the samples nearest to them."""
        inside = [s for s in self._cpu if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
