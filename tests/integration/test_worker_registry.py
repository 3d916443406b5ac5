"""The worker registry: a running worker counts as alive, busy or idle; a stopped one does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from longjobs import App, Context
from longjobs.worker import Worker, registration_ttl
from tests.integration.worker_harness import (
    LIVENESS,
    STORES,
    make_app,
    running_worker,
    stop_worker,
    store_url,
)


async def alive(app: App) -> int:
    """The workers the store counts alive."""
    return (await app.backend.queue_stats("default")).workers


async def until_alive(app: App, workers: int, timeout: float = LIVENESS) -> None:
    async with asyncio.timeout(timeout):
        while await alive(app) != workers:  # noqa: ASYNC110 - a store read
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("store", STORES)
async def test_a_running_worker_is_registered_and_a_stopped_one_is_gone(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job
    async def echo(ctx: Context, text: str) -> str:
        return text

    async with app:
        async with running_worker(app):
            await until_alive(app, 1)
            job = await app.submit("echo", "hello")
            assert (await app.wait(job.id, timeout=LIVENESS)).result == "hello"
            assert await alive(app) == 1
        stopped = await alive(app)  # right after run() returned: not left to run out

    assert stopped == 0


@pytest.mark.parametrize("store", STORES)
async def test_an_idle_worker_registers_again_with_every_heartbeat(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path), lease_seconds=0.6)  # a heartbeat every 0.2 s

    @app.job
    async def echo(ctx: Context, text: str) -> str:
        return text

    async with app:
        worker = Worker(app, concurrency=1)
        task = asyncio.create_task(worker.run())
        await until_alive(app, 1)
        for _ in range(10):  # a heartbeat may come between these two calls: then again
            await app.backend.worker_gone(worker.id)  # as if its registration had run out
            if await alive(app) == 0:
                break
        else:
            raise AssertionError("the registration never went away")

        await until_alive(app, 1, timeout=1.0)  # the next heartbeat: within 0.2 s
        await stop_worker(worker, task)

        assert await alive(app) == 0
    assert registration_ttl(app.settings) == pytest.approx(3 * 0.2 + 1.0)
