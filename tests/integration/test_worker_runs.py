"""A worker runs handlers to completion and records what they report."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from longjobs import Context, Status
from longjobs.context import current
from tests.integration.worker_harness import (
    STORES,
    assert_gap_free,
    events_of,
    make_app,
    running_worker,
    sqlite_url,
    statuses,
    store_url,
    wait_until_terminal,
)


class Document(BaseModel):
    text: str
    repeat: int = 1


class WordCount(BaseModel):
    words: int
    longest: str


@pytest.mark.parametrize("store", STORES)
async def test_pydantic_kind_completes_with_its_result_stored(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job
    async def count_words(ctx: Context, doc: Document) -> WordCount:
        words = doc.text.split() * doc.repeat
        return WordCount(words=len(words), longest=max(words, key=len))

    async with app, running_worker(app):
        job = await app.submit("count_words", {"text": "a quick brown fox", "repeat": 2})
        done = await wait_until_terminal(app, job.id)
        stored = await app.result(job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.attempt == 1
    assert done.error is None
    assert done.progress == 1.0
    assert done.result == {"words": 8, "longest": "quick"}
    assert stored is not None
    assert json.loads(stored.body) == {"words": 8, "longest": "quick"}
    assert statuses(events) == [("pending", 0), ("running", 1), ("completed", 1)]
    assert_gap_free(events)


@pytest.mark.parametrize("store", STORES)
async def test_plain_json_kind_and_ctx_only_kind_complete(store: str, tmp_path: Path) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job
    async def echo(ctx: Context, payload: Any) -> Any:
        return {"echo": payload, "attempt": ctx.attempt}

    @app.job
    async def who_am_i(ctx: Context) -> dict[str, str]:
        return {"job_id": ctx.job_id}

    async with app, running_worker(app):
        echoed = await app.submit("echo", {"list": [1, "two", None], "nested": {"ok": True}})
        bare = await app.submit("who_am_i")
        echo_done = await wait_until_terminal(app, echoed.id)
        bare_done = await wait_until_terminal(app, bare.id)

    assert echo_done.status is Status.COMPLETED
    assert echo_done.result == {
        "echo": {"list": [1, "two", None], "nested": {"ok": True}},
        "attempt": 1,
    }
    assert bare_done.status is Status.COMPLETED
    assert bare_done.result == {"job_id": bare.id}


async def test_sync_handler_runs_in_a_thread_and_reaches_its_context(tmp_path: Path) -> None:
    app = make_app(sqlite_url(tmp_path))
    seen: dict[str, Any] = {}

    def report_from_deep_inside(step: int) -> None:
        current().progress(step / 2, stage=f"step {step}")

    @app.job
    def sync_kind(ctx: Context, n: int) -> int:
        seen["is_main"] = threading.current_thread() is threading.main_thread()
        seen["current_is_ctx"] = current() is ctx
        report_from_deep_inside(1)
        report_from_deep_inside(2)
        return n * 2

    async with app, running_worker(app):
        job = await app.submit("sync_kind", 21)
        done = await wait_until_terminal(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.result == 42
    assert done.stage == "step 2"
    assert seen["is_main"] is False  # not the event loop's thread
    assert seen["current_is_ctx"] is True


async def test_current_context_is_reachable_from_helpers_of_an_async_handler(
    tmp_path: Path,
) -> None:
    app = make_app(sqlite_url(tmp_path))
    found: list[str] = []

    async def helper() -> None:
        ctx = current()
        found.append(ctx.job_id)
        await ctx.log("from the helper")

    @app.job
    async def outer(ctx: Context) -> None:
        await helper()
        await asyncio.create_task(helper())  # a child task copies the context too

    async with app, running_worker(app):
        job = await app.submit("outer")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    assert found == [job.id, job.id]
    assert [e.data["message"] for e in events if e.type == "log"] == ["from the helper"] * 2
    with pytest.raises(LookupError):
        current()


@pytest.mark.parametrize("store", STORES)
async def test_reports_reach_the_store_in_order_with_gap_free_sequence(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))

    @app.job
    async def reporter(ctx: Context) -> str:
        await ctx.progress(0.1, stage="reading", message="opening")
        await ctx.log("opened", level="info", pages=3)
        await asyncio.sleep(0.1)  # let a flush happen between the groups
        await ctx.output(delta="Hello, ")
        await ctx.output(delta="world")
        await ctx.usage(input_tokens=10, output_tokens=2)
        await asyncio.sleep(0.1)
        await ctx.progress(0.6, stage="writing", message="half way")
        await ctx.output(data={"partial": ["a"]})
        await ctx.usage(input_tokens=5, output_tokens=3)
        await ctx.log("done writing", level="warning")
        await asyncio.sleep(0.1)
        await ctx.progress(1.0, stage="done", message="finished")
        return "ok"

    async with app, running_worker(app):
        job = await app.submit("reporter")
        done = await wait_until_terminal(app, job.id)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    assert done.progress == 1.0
    assert done.eta_seconds == 0.0
    assert (done.stage, done.message) == ("done", "finished")
    assert (done.usage.input_tokens, done.usage.output_tokens) == (15, 5)
    assert_gap_free(events)
    assert events[-1].data["status"] == "completed"
    progress = [e.data for e in events if e.type == "progress"]
    assert [p["progress"] for p in progress] == [0.1, 0.6, 1.0]
    assert [p["stage"] for p in progress] == ["reading", "writing", "done"]
    assert progress[1]["eta_seconds"] > 0.0  # derived from the rate so far
    assert progress[-1]["eta_seconds"] == 0.0
    logs = [e.data for e in events if e.type == "log"]
    assert logs == [
        {"level": "info", "message": "opened", "pages": 3},
        {"level": "warning", "message": "done writing"},
    ]
    outputs = [e.data for e in events if e.type == "output"]
    assert outputs == [{"delta": "Hello, world"}, {"data": {"partial": ["a"]}}]
    usage = [e.data for e in events if e.type == "usage"]
    assert usage[-1] == {"input_tokens": 15, "output_tokens": 5}
    times = [e.at for e in events]
    assert times == sorted(times)


@pytest.mark.parametrize("store", STORES)
async def test_a_hundred_thousand_progress_calls_make_a_handful_of_writes(
    store: str, tmp_path: Path
) -> None:
    app = make_app(store_url(store, tmp_path))
    calls = 100_000

    @app.job
    async def chatty(ctx: Context) -> int:
        for i in range(1, calls + 1):
            await ctx.progress(i / calls, message=f"item {i}")
            if i % 10_000 == 0:
                await asyncio.sleep(0)  # give the flusher a chance, as real handlers do
        return calls

    async with app, running_worker(app):
        job = await app.submit("chatty")
        done = await wait_until_terminal(app, job.id, timeout=30)
        events = await events_of(app, job.id)

    assert done.status is Status.COMPLETED
    progress = [e.data for e in events if e.type == "progress"]
    assert 1 <= len(progress) <= 20
    assert progress[-1]["progress"] == 1.0
    assert progress[-1]["message"] == f"item {calls}"
    assert done.message == f"item {calls}"
    assert_gap_free(events)
