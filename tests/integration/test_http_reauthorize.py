"""Long-lived requests stop serving a caller whose key no longer holds: an event stream or a
WebSocket opened with a key that is then revoked, or opened in open mode before the first key
was made, ends before its next frame (within ``REAUTHORIZE_SECONDS``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from longjobs.http import auth as auth_module
from tests.integration.http_harness import Harness, open_harness, parse_sse
from tests.integration.test_http_auth import bearer, keyed, submit_as


@pytest.fixture
async def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(auth_module, "REAUTHORIZE_SECONDS", 0.05)
    async with open_harness(tmp_path, keepalive_seconds=0.05) as harness:
        yield harness


async def feed_ids(h: Harness, headers: dict[str, str], act: AsyncIterator[None]) -> list[str]:
    """The ids of the jobs a feed opened with ``headers`` sent while ``act`` ran; the feed must
    end by itself."""
    stream = asyncio.create_task(h.client.get("/v1/events", headers=headers))
    await asyncio.sleep(0.2)
    async for _ in act:
        pass
    response = await asyncio.wait_for(stream, timeout=5)  # ended by the server, not by us
    assert response.status_code == 200
    return [
        json.loads(frame["data"])["id"]
        for frame in parse_sse(response.text)
        if frame.get("event") == "job"
    ]


async def test_a_feed_opened_in_open_mode_ends_once_keys_are_required(h: Harness) -> None:
    seen: list[str] = []

    async def act() -> AsyncIterator[None]:
        seen.append((await h.submit())["id"])  # open mode: the feed sends it
        await asyncio.sleep(0.2)
        key = await keyed(h, "default")
        await asyncio.sleep(0.3)
        seen.append(await submit_as(h, key))  # too late: the feed has ended
        yield

    ids = await feed_ids(h, {}, act())
    assert ids
    assert set(ids) == {seen[0]}


async def test_a_feed_ends_once_its_key_is_revoked(h: Harness) -> None:
    record, key = await h.app.create_api_key("acme")
    other = await keyed(h, "acme")
    seen: list[str] = []

    async def act() -> AsyncIterator[None]:
        seen.append(await submit_as(h, key))
        await asyncio.sleep(0.2)
        assert await h.app.backend.revoke_api_key(record.id)
        await asyncio.sleep(0.3)
        seen.append(await submit_as(h, other))
        yield

    ids = await feed_ids(h, bearer(key), act())
    assert ids
    assert set(ids) == {seen[0]}


async def test_a_job_stream_ends_once_its_key_is_revoked(h: Harness) -> None:
    record, key = await h.app.create_api_key("acme")
    job_id = await submit_as(h, key)
    url = f"/v1/jobs/{job_id}/events"
    stream = asyncio.create_task(h.client.get(url, headers=bearer(key)))
    await asyncio.sleep(0.2)
    assert await h.app.backend.revoke_api_key(record.id)
    response = await asyncio.wait_for(stream, timeout=5)  # the job never ends: the key did
    assert response.status_code == 200
    assert [frame["event"] for frame in parse_sse(response.text) if "event" in frame] == ["status"]
