"""A real API over a real SQLite file, an httpx client on it, and a hand to drive jobs.

Jobs are driven through the backend itself (claim, report, finish, as a worker would), so tests
decide exactly when each job moves; tests that want a real worker pass ``with_worker=True``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field, field_validator

from longjobs import App, Context, JobError, Settings
from longjobs.backends.base import Completed, Failed, Finish, JobUpdate
from longjobs.http import BackgroundFunction, LifespanHook, create_api
from longjobs.models import Job
from longjobs.worker import Worker

WORKER = "test-worker"


class EchoInput(BaseModel):
    text: str
    count: int = Field(1, ge=1)


class Explosive(BaseModel):
    fuse: str

    @field_validator("fuse")
    @classmethod
    def _explode(cls, value: str) -> str:
        raise RuntimeError(f"secret-canary {value}")


async def echo(ctx: Context, payload: EchoInput) -> dict[str, str]:
    """Repeat the text ``count`` times."""
    return {"text": payload.text * payload.count}


async def tick(ctx: Context) -> None:
    """Do nothing."""


async def explosive(ctx: Context, payload: Explosive) -> None:
    """Never runs: its input cannot be validated."""


def register_kinds(app: App) -> None:
    """``echo`` (validated input, JSON output), ``tick`` (no input) and ``explosive`` (whose
    input validation crashes with an unexpected exception)."""
    app.job(timeout=30, max_attempts=2, result_ttl=600)(echo)
    app.job(tick)
    app.job(explosive)


@dataclass
class Harness:
    """The App, its API and a client talking to the API in-process over ASGI."""

    app: App
    api: FastAPI
    client: httpx.AsyncClient

    async def submit(self, kind: str = "echo", input: Any = None, **options: Any) -> dict[str, Any]:
        """Submit through the API; asserts the 202 and returns the job resource."""
        body = {"kind": kind, "input": {"text": "hi"} if input is None else input, **options}
        response = await self.client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        resource: dict[str, Any] = response.json()
        return resource

    async def claim(self, job_id: str) -> Job:
        """Claim ``job_id`` as the test worker; returns it running. It must be the job a worker
        would take next among the pending jobs of its kind (the oldest of the top priority)."""
        job = await self.app.get(job_id)
        claimed = await self.app.backend.claim_jobs(WORKER, [job.kind], 1, 60.0)
        assert [c.id for c in claimed] == [job_id], f"{job_id} was not next in line"
        return claimed[0]

    async def report(self, job: Job, *events: tuple[str, dict[str, Any]], **columns: Any) -> None:
        """Append events (and set columns such as ``progress``) as the running attempt."""
        update = JobUpdate(job.id, job.attempt, events=list(events), **columns)
        lost = await self.app.backend.append_events(WORKER, [update])
        assert not lost

    async def complete(self, job: Job, result: Any) -> None:
        """Finish the running attempt with ``result`` stored as JSON."""
        body = json.dumps(result).encode()
        ok = await self.app.backend.finish_jobs(
            WORKER, [Finish(job.id, job.attempt, Completed(body))]
        )
        assert ok == [True]

    async def fail(self, job: Job, error: JobError) -> None:
        """Finish the running attempt as failed for good."""
        ok = await self.app.backend.finish_jobs(
            WORKER, [Finish(job.id, job.attempt, Failed(error))]
        )
        assert ok == [True]

    async def run(self, job_id: str, result: Any) -> Job:
        """Claim and complete ``job_id`` at once."""
        job = await self.claim(job_id)
        await self.complete(job, result)
        return job


@asynccontextmanager
async def running_worker(app: App) -> AsyncIterator[Worker]:
    """A real worker for the life of the block, stopped gracefully."""
    worker = Worker(app, concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task


@asynccontextmanager
async def open_harness(
    tmp_path: Path,
    *,
    with_worker: bool = False,
    background: Sequence[BackgroundFunction] = (),
    keepalive_seconds: float = 15.0,
    raise_app_exceptions: bool = True,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """An App on ``tmp_path/t.db`` with the test kinds, its API running its lifespan, a client."""
    url = "sqlite:///" + str(tmp_path / "t.db")
    defaults: dict[str, Any] = {"max_body_bytes": 4096, "max_wait_seconds": 2.0}
    app = App(url, settings=Settings(database_url=url, **{**defaults, **settings}))
    register_kinds(app)
    hooks: list[LifespanHook] = [lambda: running_worker(app)] if with_worker else []
    api = create_api(
        app, background=background, lifespan_hooks=hooks, keepalive_seconds=keepalive_seconds
    )
    transport = httpx.ASGITransport(app=api, raise_app_exceptions=raise_app_exceptions)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(api.router.lifespan_context(api))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver")
        )
        yield Harness(app=app, api=api, client=client)


def parse_sse(text: str) -> list[dict[str, str]]:
    """The frames of an SSE body, each as ``{field: value}``; a comment is ``{":": text}``."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            frame[name or ":"] = value.removeprefix(" ")
        frames.append(frame)
    return frames


def event_frames(text: str) -> list[dict[str, Any]]:
    """The event frames of an SSE body as ``{"id", "event", "data"}`` with ``data`` decoded."""
    return [
        {"id": int(f["id"]), "event": f["event"], "data": json.loads(f["data"])}
        for f in parse_sse(text)
        if "id" in f
    ]


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Assert ``response`` is the problem ``slug`` with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body
