"""What every benchmark needs: fresh databases, worker and server processes, measurements."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

    def __init__(self, args: list[str], url: str, ready_marker: str) -> None:
        env = {**os.environ, "LONGJOBS_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
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
def workers(url: str, count: int, concurrency: int) -> Iterator[list[Process]]:
    args = ["worker", "bench.apps:app", "--concurrency", str(concurrency), "--log-level", "info"]
    procs = [Process(args, url, "started") for _ in range(count)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@contextlib.contextmanager
def server(url: str) -> Iterator[str]:
    port = free_port()
    args = ["serve", "bench.apps:app", "--port", str(port), "--log-level", "info"]
    proc = Process(args, url, "Application startup complete")
    try:
        proc.wait_ready()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def wait_until_drained(url: str, *, timeout: float, sample: Process | None = None) -> int:
    """Block until no job is pending or running; returns the largest RSS seen in ``sample``."""
    conn = sqlite3.connect(db_path(url), timeout=30)
    deadline = time.monotonic() + timeout
    peak = 0
    try:
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT EXISTS(SELECT 1 FROM jobs WHERE status = 'pending') "
                "OR EXISTS(SELECT 1 FROM jobs WHERE status = 'running')"
            ).fetchone()[0]
            if sample is not None:
                peak = max(peak, sample.rss())
            if not busy:
                return peak
            time.sleep(0.02)
    finally:
        conn.close()
    raise TimeoutError(f"jobs still running after {timeout} s")


def finished_span(url: str, since: float) -> tuple[float, int]:
    """Seconds from ``since`` to the last finish, and how many jobs completed."""
    with contextlib.closing(sqlite3.connect(db_path(url))) as conn:
        last, completed = conn.execute(
            "SELECT max(finished_at), sum(status = 'completed') FROM jobs"
        ).fetchone()
    return float(last) - since, int(completed or 0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]
