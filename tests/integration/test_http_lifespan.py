"""create_api's lifespan (App, hooks, background tasks), readiness, and mounting under a prefix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from longjobs import App
from longjobs.http import LifespanHook, create_api
from longjobs.worker import Worker
from tests.integration.http_harness import open_harness, problem, register_kinds


def sqlite_app(tmp_path: Path) -> App:
    app = App("sqlite:///" + str(tmp_path / "t.db"))
    register_kinds(app)
    return app


async def test_lifespan_opens_the_app_runs_hooks_in_order_and_closes_it(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    journal: list[str] = []

    def hook(name: str) -> LifespanHook:
        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            journal.append(f"enter {name}, app open: {app.backend is not None}")
            yield
            journal.append(f"exit {name}, app open: {app.backend is not None}")

        return run

    api = create_api(app, lifespan_hooks=[hook("a"), hook("b")])
    async with api.router.lifespan_context(api):
        journal.append("serving")

    assert journal == [
        "enter a, app open: True",
        "enter b, app open: True",
        "serving",
        "exit b, app open: True",
        "exit a, app open: True",
    ]
    with pytest.raises(RuntimeError):
        _ = app.backend


async def test_background_tasks_run_while_serving_and_are_cancelled_on_shutdown(
    tmp_path: Path,
) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    api = create_api(sqlite_app(tmp_path), background=[forever])
    async with api.router.lifespan_context(api):
        await asyncio.wait_for(started.wait(), timeout=5)
        assert outcome == []

    assert outcome == ["cancelled"]


async def test_a_crashed_background_task_makes_the_api_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def doomed() -> None:
        raise ValueError("worker blew up")

    async with open_harness(tmp_path, background=[doomed]) as h:
        await asyncio.sleep(0.05)
        ready = await h.client.get("/readyz")
        health = await h.client.get("/healthz")

    body = problem(ready, 503, "not-ready")
    assert "doomed" in body["detail"]
    assert ready.headers["retry-after"] == "5"
    assert health.status_code == 200
    crashes = [r for r in caplog.records if r.name == "longjobs.http" and "crashed" in r.message]
    assert len(crashes) == 1
    assert crashes[0].levelno == logging.ERROR


async def test_readyz_is_503_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    app = App("sqlite:///" + str(tmp_path / "missing" / "dir" / "t.db"))
    api = create_api(app)  # lifespan not run: it would refuse to start
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://testserver"
    ) as client:
        ready = await client.get("/readyz")
        health = await client.get("/healthz")

    problem(ready, 503, "not-ready")
    assert health.status_code == 200


async def test_a_worker_as_background_task_completes_jobs(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    worker = Worker(app, concurrency=2)
    api = create_api(app, background=[worker.run])
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        response = await client.post(
            "/v1/jobs",
            json={"kind": "echo", "input": {"text": "ok"}},
            headers={"Prefer": "wait=10"},
        )
        ready = await client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"text": "ok"}
    assert ready.status_code == 200


async def test_mounted_under_a_prefix_links_carry_the_prefix(tmp_path: Path) -> None:
    longjobs_api = create_api(sqlite_app(tmp_path))

    @asynccontextmanager
    async def lifespan(main: FastAPI) -> AsyncIterator[None]:
        async with longjobs_api.router.lifespan_context(longjobs_api):
            yield

    main = FastAPI(lifespan=lifespan)
    main.mount("/jobs-api", longjobs_api)
    transport = httpx.ASGITransport(app=main)
    async with (
        main.router.lifespan_context(main),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        submitted = await client.post("/jobs-api/v1/jobs", json={"kind": "tick"})
        job_id = submitted.json()["id"]
        fetched = await client.get(submitted.headers["location"])
        missing = await client.get("/jobs-api/v1/nothing")

    assert submitted.status_code == 202
    assert submitted.headers["location"] == f"/jobs-api/v1/jobs/{job_id}"
    assert fetched.status_code == 200
    assert fetched.json()["links"]["events"] == f"/jobs-api/v1/jobs/{job_id}/events"
    problem(missing, 404, "not-found")


async def test_middleware_added_by_the_user_sees_submissions_too(tmp_path: Path) -> None:
    api = create_api(sqlite_app(tmp_path))
    seen: list[str] = []

    class Recorder:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.app(scope, receive, send)

    api.add_middleware(Recorder)
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        submitted = await client.post("/v1/jobs", json={"kind": "tick"})

    assert submitted.status_code == 202
    assert seen == ["POST /v1/jobs"]
