"""Webhook delivery: jobs submitted with a webhook URL, run by worker processes, whose signed
events go to a receiver on loopback. Measured: how long after a job's finish its event arrives,
and how many events per second the workers deliver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from bench import apps
from bench.harness import Measurement, percentile, wait_until_drained, workers
from longjobs import App
from longjobs.settings import Settings


def _app(url: str) -> App:
    """The bench app's kinds, allowed to send webhooks to loopback (the receiver)."""
    app = App(url, settings=Settings(database_url=url, webhook_allow_networks=["127.0.0.0/8"]))
    app.kinds.update(apps.app.kinds)
    return app


ENV = {"LONGJOBS_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]', "LONGJOBS_WEBHOOK_CONCURRENCY": "64"}


@dataclass
class _Receiver:
    """A minimal HTTP/1.1 server (keep-alive, 200 with an empty body): the load generator must
    not be what is measured. Records when each event arrived."""

    arrived: dict[str, float] = field(default_factory=dict)
    port: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.arrived[json.loads(body)["data"]["id"]] = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def run(self) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            self.loop = asyncio.get_running_loop()
            self.ready.set()
            async with server:
                await server.serve_forever()

        asyncio.run(main())


def _receiving() -> tuple[_Receiver, str]:
    """A receiver running on a thread of its own, and the URL to send to it."""
    receiver = _Receiver()
    threading.Thread(target=receiver.run, daemon=True).start()
    receiver.ready.wait(10)
    return receiver, f"http://127.0.0.1:{receiver.port}/hook"


def _delays(url: str, receiver: _Receiver, scenario: str, jobs: int) -> Measurement:
    """The delay from each job's finish (as stored) to its event's arrival."""
    finished = asyncio.run(_finished_at(url))
    delays = [
        (receiver.arrived[j] - at) * 1000 for j, at in finished.items() if j in receiver.arrived
    ]
    p50 = round(percentile(delays, 50), 1) if delays else None
    p99 = round(percentile(delays, 99), 1) if delays else None
    return Measurement(
        scenario=scenario,
        metric="finish → received",
        value=float("nan") if p50 is None else p50,
        unit="ms",
        details={"p50_ms": p50, "p99_ms": p99, "received": len(receiver.arrived), "jobs": jobs},
    )


async def _submit(url: str, jobs: int, hook: str) -> None:
    async with _app(url) as app:
        new = [app.prepare("noop", None, webhook_url=hook) for _ in range(jobs)]
        backend = await app.open()
        for start in range(0, jobs, 500):
            await backend.create_jobs(new[start : start + 500])


async def _finished_at(url: str) -> dict[str, float]:
    async with _app(url) as app:
        backend = await app.open()
        found: dict[str, float] = {}
        cursor = None
        while True:
            page = await backend.list_jobs("default", limit=1000, cursor=cursor)
            for job in page.data:
                if job.finished_at is not None:
                    found[job.id] = job.finished_at.timestamp()
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


async def _one_at_a_time(url: str, jobs: int, hook: str, receiver: _Receiver) -> None:
    async with _app(url) as app:
        for _ in range(jobs):
            job = await app.submit("noop", None, webhook_url=hook)
            deadline = time.monotonic() + 10
            while job.id not in receiver.arrived and time.monotonic() < deadline:  # noqa: ASYNC110 - the receiver is another thread
                await asyncio.sleep(0.001)


def one_at_a_time(url: str, *, jobs: int, store: str = "") -> Measurement:
    """``jobs`` no-op jobs with a webhook URL, each submitted once the last one's event
    arrived: the delay of one delivery on an idle worker."""
    receiver, hook = _receiving()
    with workers(url, 1, 16, env=ENV):
        asyncio.run(_one_at_a_time(url, jobs, hook, receiver))
    scenario = f"{store}webhooks: {jobs} jobs one at a time, 1 worker"
    return _delays(url, receiver, scenario, jobs)


def delivered(url: str, *, jobs: int, processes: int, store: str = "") -> Measurement:
    """``jobs`` no-op jobs with a webhook URL each, ``processes`` worker processes."""
    receiver, hook = _receiving()
    with workers(url, processes, 256, env=ENV):
        started = time.time()
        asyncio.run(_submit(url, jobs, hook))
        wait_until_drained(url, timeout=300)
        deadline = time.monotonic() + 120
        while len(receiver.arrived) < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
    span = max(receiver.arrived.values()) - started if receiver.arrived else float("nan")
    scenario = f"{store}webhooks: {jobs:,} jobs with a webhook URL, {processes} worker(s)"
    measured = _delays(url, receiver, scenario, jobs)
    rate = round(len(receiver.arrived) / span) if receiver.arrived else 0
    measured.details["deliveries_per_s"] = rate
    return measured
