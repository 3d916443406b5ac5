"""GET /v1/events: the tenant-wide change feed over SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from longjobs.http import close_streams
from tests.integration.http_harness import Harness, open_harness, parse_sse, problem
from tests.integration.test_http_auth import keyed, submit_as


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, keepalive_seconds=0.05) as harness:
        yield harness


async def feed_while(
    h: Harness, act: Callable[[], Awaitable[None]], *, url: str = "/v1/events", **headers: str
) -> httpx.Response:
    """The feed's whole answer to a client connected while ``act`` runs; the feed is ended by
    ``close_streams`` (as on shutdown) once ``act`` is done and the feed has caught up."""
    stream = asyncio.create_task(h.client.get(url, headers=headers))
    await asyncio.sleep(0.2)  # connected: the feed starts at its head
    await act()
    await asyncio.sleep(0.5)
    close_streams(h.api)
    try:
        return await asyncio.wait_for(stream, timeout=10)
    finally:
        h.api.state.longjobs.closing.clear()  # the next feed of the test is served again


def job_frames(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        {"id": f["id"], **json.loads(f["data"])}
        for f in parse_sse(response.text)
        if f.get("event") == "job"
    ]


async def test_the_feed_opens_at_now_and_follows_every_job_to_its_end(h: Harness) -> None:
    before = (await h.submit())["id"]
    await h.run(before, {"text": "earlier"})
    ids: list[str] = []

    async def act() -> None:
        ids.append((await h.submit())["id"])
        job = await h.claim(ids[0])
        await h.report(job, ("progress", {"progress": 0.5}), progress=0.5, stage="half")
        await asyncio.sleep(0.3)
        await h.complete(job, {"text": "hi"})

    response = await feed_while(h, act)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    assert frames[0] == {"retry": "2000"}
    assert frames[1]["event"] == "open"
    assert frames[1]["id"]
    jobs = job_frames(response)
    assert {job["id"] for job in jobs} == {ids[0]}, "only changes after connecting"
    assert before not in {job["id"] for job in jobs}
    statuses = [job["status"] for job in jobs]
    assert statuses[-1] == "completed"
    assert statuses == sorted(statuses, key=["pending", "running", "completed"].index)
    assert all("input" not in job and "result" not in job for job in jobs)
    assert any(job["stage"] == "half" for job in jobs)
    assert {":": "keepalive"} in frames


async def test_last_event_id_resumes_after_that_change(h: Harness) -> None:
    ids: list[str] = []

    async def act() -> None:
        for _ in range(3):
            ids.append((await h.submit())["id"])

    first = await feed_while(h, act)
    cursors = [frame["id"] for frame in parse_sse(first.text) if frame.get("event") == "job"]
    assert len(cursors) == 3

    async def nothing() -> None:
        return None

    resumed = await feed_while(h, nothing, **{"Last-Event-ID": cursors[0]})
    assert [job["id"] for job in job_frames(resumed)] == ids[1:]
    by_query = await feed_while(h, nothing, url=f"/v1/events?after={cursors[1]}")
    assert [job["id"] for job in job_frames(by_query)] == ids[2:]


async def test_filters_by_kind_and_status(h: Harness) -> None:
    async def act() -> None:
        assert (await h.client.post("/v1/jobs", json={"kind": "tick"})).status_code == 202
        echo = (await h.submit())["id"]
        await h.run(echo, {"text": "x"})

    response = await feed_while(h, act, url="/v1/events?kind=echo&status=completed,failed")

    jobs = job_frames(response)
    assert [(job["kind"], job["status"]) for job in jobs] == [("echo", "completed")]


async def test_a_bad_cursor_or_status_is_a_422_problem(h: Harness) -> None:
    bad_cursor = await h.client.get("/v1/events", headers={"Last-Event-ID": "not-a-cursor"})
    problem(bad_cursor, 422, "invalid-input")
    bad_status = await h.client.get("/v1/events?status=sleeping")
    problem(bad_status, 422, "invalid-input")


async def test_each_tenant_sees_only_its_own_jobs(tmp_path: Path) -> None:
    async with open_harness(tmp_path, keepalive_seconds=0.05) as h:
        acme, bob = await keyed(h, "acme"), await keyed(h, "bob")
        mine: list[str] = []

        async def act() -> None:
            mine.append(await submit_as(h, acme))
            await submit_as(h, bob)

        response = await feed_while(h, act, Authorization=f"Bearer {acme}")
        refused = await h.client.get("/v1/events")

    assert [job["id"] for job in job_frames(response)] == mine
    assert refused.status_code == 401


async def test_a_feed_holds_a_stream_slot_until_it_ends(tmp_path: Path) -> None:
    async with open_harness(tmp_path, keepalive_seconds=0.05, max_streams_per_key=1) as h:
        refused: list[httpx.Response] = []

        async def act() -> None:
            refused.append(await h.client.get("/v1/events"))

        await feed_while(h, act)
        again = await feed_while(h, act)

    assert refused[0].status_code == 429
    assert refused[0].headers["retry-after"]
    assert again.status_code == 200, "the slot was given back when the first feed ended"
