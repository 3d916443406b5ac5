"""The client's retry rules, with the server's answers scripted at the transport level."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from rich.text import Text

from longjobs.cli_jobs import _progress_text
from longjobs.client import (
    AsyncClient,
    Backoff,
    ConnectionFailed,
    EventResource,
    RateLimited,
    Unavailable,
)

NO_WAIT = Backoff(base=0.0, cap=0.0, max_retry_after=0.0)

JOB = {
    "id": "job_1",
    "object": "job",
    "kind": "k",
    "status": "pending",
    "created_at": "2026-01-01T00:00:00Z",
    "links": {"self": "s", "events": "e", "result": "r", "cancel": "c"},
}


def problem(status: int, slug: str, **headers: str) -> httpx.Response:
    body = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": slug}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


def scripted(
    *answers: httpx.Response | Exception,
) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    seen: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def client_for(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> AsyncClient:
    options.setdefault("backoff", NO_WAIT)
    return AsyncClient("http://test", transport=httpx.MockTransport(handler), **options)


async def test_a_submit_retried_after_a_connection_error_sends_the_same_key() -> None:
    handler, seen = scripted(
        httpx.ConnectError("refused"),
        problem(503, "storage-unavailable"),
        httpx.Response(202, json=JOB),
    )
    async with client_for(handler) as client:
        job = await client.submit("k", {"a": 1})
    assert job.id == "job_1"
    keys = {request.headers["idempotency-key"] for request in seen}
    assert len(seen) == 3
    assert len(keys) == 1
    assert {json.loads(request.content)["input"]["a"] for request in seen} == {1}


async def test_429_and_503_are_retried_then_raised_typed() -> None:
    handler, seen = scripted(*(problem(429, "too-many-requests", **{"Retry-After": "3"}),) * 3)
    async with client_for(handler, retries=2) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get("job_1")
    assert len(seen) == 3
    assert caught.value.retry_after == 3.0

    handler, seen = scripted(problem(503, "storage-unavailable"))
    async with client_for(handler, retries=0) as client:
        with pytest.raises(Unavailable):
            await client.cancel("job_1")


async def test_connection_failed_after_the_last_retry() -> None:
    handler, seen = scripted(*(httpx.ConnectError("refused"),) * 4)
    async with client_for(handler, retries=3) as client:
        with pytest.raises(ConnectionFailed):
            await client.get("job_1")
    assert len(seen) == 4


async def test_a_delete_retried_after_a_lost_answer_accepts_404() -> None:
    handler, seen = scripted(httpx.ReadError("reset"), problem(404, "job-not-found"))
    async with client_for(handler) as client:
        await client.delete("job_1")
    assert [request.method for request in seen] == ["DELETE", "DELETE"]


async def test_ids_are_escaped_in_paths() -> None:
    handler, seen = scripted(problem(404, "job-not-found"))
    async with client_for(handler, retries=0) as client:
        with pytest.raises(Exception, match="404"):
            await client.get("../kinds?x=1")
    assert seen[0].url.raw_path == b"/v1/jobs/..%2Fkinds%3Fx%3D1"


def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    backoff = Backoff(base=0.1, cap=1.0, max_retry_after=30.0)
    delays = [backoff.delay(10) for _ in range(200)]
    assert max(delays) <= 1.0
    assert len(set(delays)) > 100
    assert backoff.delay(0, retry_after=5.0) >= 5.0
    assert backoff.delay(0, retry_after=500.0) == 30.0


async def test_wait_long_polls_and_backs_off_when_the_server_does_not_hold() -> None:
    running = {**JOB, "status": "running"}
    done = {**JOB, "status": "completed"}
    quick = {"Retry-After": "0"}
    handler, seen = scripted(
        httpx.Response(200, json=running, headers=quick),
        httpx.Response(200, json=running, headers=quick),
        httpx.Response(200, json=done),
    )
    async with client_for(handler) as client:
        job = await client.wait("job_1")
    assert job.status == "completed"
    assert [request.url.params["wait"] for request in seen] == ["30"] * 3
    assert all(request.url.path == "/v1/jobs/job_1" for request in seen)


async def test_a_server_that_is_not_longjobs_is_connection_failed() -> None:
    handler, _ = scripted(httpx.Response(200, text="<html>Sign in to the Wi-Fi</html>"))
    async with client_for(handler) as client:
        with pytest.raises(ConnectionFailed, match="not a longjobs answer"):
            await client.get("job_1")


async def test_wait_with_no_time_looks_once() -> None:
    handler, seen = scripted(httpx.Response(200, json={**JOB, "status": "completed"}))
    async with client_for(handler) as client:
        job = await client.wait("job_1", timeout=0)
    assert job.status == "completed"
    assert "wait" not in seen[0].url.params


def test_watch_shows_job_text_as_text_not_markup() -> None:
    event = EventResource.model_validate(
        {"type": "progress", "sequence_number": 3, "job_id": "job_1",
         "at": "2026-01-01T00:00:00Z", "stage": "copy", "message": "copied [/] files [a-z]+"}
    )  # fmt: skip
    description = _progress_text(event)["description"]
    assert Text.from_markup(description).plain == "copy · copied [/] files [a-z]+"


def _frame(sequence: int, status: str) -> bytes:
    data = {"type": "status", "sequence_number": sequence, "job_id": "job_1",
            "at": "2026-01-01T00:00:00Z", "status": status}  # fmt: skip
    return f"id: {sequence}\nevent: status\ndata: {json.dumps(data)}\n\n".encode()


async def test_a_stream_quiet_for_longer_than_reconnect_for_is_still_resumed() -> None:
    async def quiet_then_dropped() -> AsyncIterator[bytes]:
        yield _frame(0, "pending")
        await asyncio.sleep(0.3)  # longer than reconnect_for, then the server goes away

    sse = {"content-type": "text/event-stream"}
    handler, seen = scripted(
        httpx.Response(200, headers=sse, content=quiet_then_dropped()),
        httpx.ConnectError("refused"),
        httpx.Response(200, headers=sse, content=_frame(1, "completed")),
    )
    async with client_for(handler, reconnect_for=0.2) as client:
        events = [event async for event in client.events("job_1")]

    assert [event.sequence_number for event in events] == [0, 1]
    assert seen[-1].headers["last-event-id"] == "0"
