"""Real ``longjobs`` processes for the acceptance tests: started, watched, signalled, killed.

Each process runs in its own session (``start_new_session=True``), so ``os.killpg`` reaches it and
anything it started. Its stdout and stderr go to files in the test's temporary directory rather
than pipes, so a chatty process can never block on a full pipe, and the files outlive it for the
report of a failed test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
LONGJOBS = ROOT / ".venv" / "bin" / "longjobs"
APP = "tests.acceptance.apps.chaos_app:app"

LEASE_SECONDS = 2.0
SWEEP_INTERVAL = 0.5
SETTINGS: dict[str, str] = {
    "LONGJOBS_LEASE_SECONDS": str(LEASE_SECONDS),
    "LONGJOBS_SWEEP_INTERVAL": str(SWEEP_INTERVAL),
    "LONGJOBS_POLL_INTERVAL": "0.02",
    "LONGJOBS_FLUSH_INTERVAL": "0.05",
    "LONGJOBS_SHUTDOWN_GRACE": "1",
    "LONGJOBS_CANCEL_GRACE": "2",
}
"""Short leases and sweeps so that rescues happen in seconds, not minutes."""

STARTUP_SECONDS = 30.0
TERMINAL = frozenset({"completed", "failed", "cancelled"})

T = TypeVar("T")


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it for a bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """The first truthy value of ``predicate()``; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class LongjobsProcess:
    """One running ``longjobs`` command."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    base_url: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process and everything in its session."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> float:
        """SIGKILL the whole process group; returns the time of the kill."""
        at = time.time()
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)
        return at

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)


class Cluster:
    """The processes of one test, sharing one store (a SQLite file, or the PostgreSQL database
    ``database_url`` names) and one effect ledger."""

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        self.directory = directory
        self.db_path = directory / "jobs.db"
        self._database_url = database_url
        self.ledger_path = directory / "ledger.jsonl"
        self.processes: list[LongjobsProcess] = []
        self._names: dict[str, int] = {}

    @property
    def database_url(self) -> str:
        return self._database_url or f"sqlite:///{self.db_path}"

    @property
    def on_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LONGJOBS_")}
        env.update(SETTINGS)
        env["LONGJOBS_DATABASE_URL"] = self.database_url
        env["LEDGER_PATH"] = str(self.ledger_path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def start(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> LongjobsProcess:
        """Start ``longjobs *args`` from the project root; does not wait for anything."""
        number = self._names[name] = self._names.get(name, 0) + 1
        label = f"{name}-{number}"
        stderr_path = self.directory / f"{label}.stderr.log"
        argv = [str(LONGJOBS), *args]
        with (
            open(self.directory / f"{label}.stdout.log", "wb") as out,
            open(stderr_path, "wb") as err,
        ):
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.environment(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        process = LongjobsProcess(label, argv, popen, stderr_path)
        self.processes.append(process)
        return process

    def serve(
        self,
        *options: str,
        worker: bool = True,
        concurrency: int = 4,
        env: Mapping[str, str] | None = None,
        app: str = APP,
        port: int | None = None,
    ) -> LongjobsProcess:
        """``longjobs serve`` of ``app`` on ``port`` (default: a free loopback port), once
        ``/healthz`` answers."""
        for _ in range(1 if port else 3):  # a free port may be taken before the server binds it
            bound = port or free_port()
            args = ["serve", app, "--port", str(bound), "--concurrency", str(concurrency)]
            if not worker:
                args.append("--no-worker")
            process = self.start("serve", [*args, *options], env=env)
            process.base_url = f"http://127.0.0.1:{bound}"
            if self._wait_healthy(process):
                return process
            if "address already in use" not in process.stderr().lower():
                break
        raise AssertionError(f"{process.name} did not become healthy:\n{process.stderr()}")

    @staticmethod
    def _wait_healthy(process: LongjobsProcess) -> bool:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and process.alive:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{process.base_url}/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        return False

    def worker(
        self,
        *options: str,
        concurrency: int = 4,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> LongjobsProcess:
        """``longjobs worker``; with ``ready``, returns once it logged that it started."""
        args = ["worker", APP, "--concurrency", str(concurrency), *options]
        process = self.start("worker", args, env=env)
        if ready:
            wait_worker_ready(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.alive:
                process.kill()

    def stderr_containing(self, text: str) -> list[str]:
        """``name: line`` for every stderr line of every process that contains ``text``."""
        return [
            f"{process.name}: {line}"
            for process in self.processes
            for line in process.stderr().splitlines()
            if text.lower() in line.lower()
        ]

    def report(self, tail_lines: int = 60) -> str:
        """The end of every process's stderr, for the report of a failed test."""
        parts = []
        for process in self.processes:
            state = "running" if process.alive else f"exit {process.popen.returncode}"
            lines = process.stderr().splitlines()[-tail_lines:]
            parts.append(f"--- {process.name} (pid {process.pid}, {state}) ---")
            parts.extend(lines)
        return "\n".join(parts)


def stored_bytes(cluster: Cluster) -> bytes:
    """Everything the cluster's store holds, as bytes: the SQLite file with its WAL, or every
    row of every table of the PostgreSQL database as text."""
    if cluster.on_sqlite:
        files = sorted(cluster.directory.glob("jobs.db*"))
        assert {path.name for path in files} >= {"jobs.db", "jobs.db-wal", "jobs.db-shm"}
        return b"".join(path.read_bytes() for path in files)

    async def dump() -> bytes:
        conn = await asyncpg.connect(cluster.database_url)
        try:
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            rows = [
                str(row[0])
                for table in tables
                for row in await conn.fetch(f'SELECT t::text FROM "{table[0]}" AS t')
            ]
        finally:
            await conn.close()
        return "\n".join(rows).encode()

    return asyncio.run(dump())


def run_keys(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``longjobs keys *args`` against the cluster's database, as an operator runs it."""
    return subprocess.run(
        [str(LONGJOBS), "keys", *args, "--database-url", cluster.database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def create_key(cluster: Cluster, tenant: str) -> tuple[str, str]:
    """A new API key of ``tenant`` made with the command line: its id and its secret."""
    done = run_keys(cluster, "create", "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    return created["id"], created["key"]


def wait_worker_ready(process: LongjobsProcess) -> None:
    """Return once the worker logged that it started; AssertionError if it exited instead."""
    wait_until(
        lambda: " started: " in process.stderr() or not process.alive,
        timeout=STARTUP_SECONDS,
        what=f"{process.name} to start",
    )
    assert process.alive, f"{process.name} exited:\n{process.stderr()}"


# -- talking to the API ---------------------------------------------------------------------------
def submit(client: httpx.Client, kind: str, job_input: Any = None, **options: Any) -> str:
    """Submit one job; asserts the 202 and returns the job id."""
    response = client.post("/v1/jobs", json={"kind": kind, "input": job_input, **options})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def submit_many(
    client: httpx.Client, kind: str, inputs: Sequence[Any], *, threads: int = 8
) -> list[str]:
    """Submit one job per input over a few connections at once; returns the ids in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda value: submit(client, kind, value), inputs))


def get_job(client: httpx.Client, job_id: str, *, wait: float | None = None) -> dict[str, Any]:
    params = {} if wait is None else {"wait": wait}
    response = client.get(f"/v1/jobs/{job_id}", params=params)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: frozenset[str] | set[str], *, timeout: float
) -> dict[str, Any]:
    """The job once its status is one of ``statuses``.

    Waiting for terminal statuses long-polls with ``?wait=``. Other statuses are polled: ``?wait=``
    returns when the status changes from the one the *server* reads first, so a job that became
    running just before the request would hold a wait for "running" until the timeout.
    """
    long_poll = set(statuses) <= TERMINAL
    deadline = time.monotonic() + timeout
    job = get_job(client, job_id)
    while job["status"] not in statuses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{job_id} is {job['status']}, not {sorted(statuses)}")
        if long_poll:
            job = get_job(client, job_id, wait=min(remaining, 5.0))
        else:
            time.sleep(0.02)
            job = get_job(client, job_id)
    return job


def wait_terminal(client: httpx.Client, job_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    return wait_for_status(client, job_id, TERMINAL, timeout=timeout)


def unfinished_count(client: httpx.Client) -> int:
    """How many jobs are pending or running (0 or 1..100: one page is enough to tell)."""
    response = client.get("/v1/jobs", params={"status": "pending,running", "limit": 100})
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


def wait_all_terminal(client: httpx.Client, *, timeout: float) -> None:
    wait_until(
        lambda: unfinished_count(client) == 0,
        timeout=timeout,
        interval=0.25,
        what="every job to be terminal",
    )


def stored_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


@dataclass
class SSEFrame:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None


def read_sse(lines: Iterator[str]) -> Iterator[SSEFrame]:
    """The frames of a Server-Sent Events stream (comments dropped), as the spec parses them: a
    frame counts once its blank line arrives, and one cut short by the end of the stream is
    dropped, so a client that resumes after the last frame it got misses nothing."""
    frame = SSEFrame()
    seen = False
    for line in lines:
        if not line:
            if seen:
                yield frame
            frame, seen = SSEFrame(), False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen = True
        if name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            frame.data = f"{frame.data}\n{value}" if frame.data else value
        elif name == "retry" and value.isdigit():
            frame.retry = int(value)
