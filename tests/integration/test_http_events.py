"""GET /v1/jobs/{id}/events: SSE framing, resumption, keepalive, the JSON form, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from longjobs.models import Job
from tests.integration.http_harness import Harness, event_frames, open_harness, parse_sse, problem


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, keepalive_seconds=0.05) as harness:
        yield harness


async def finished_job(h: Harness) -> str:
    """A completed job whose log is: 0 pending, 1 running, 2-3 progress, 4 log, 5 completed."""
    job_id = str((await h.submit())["id"])
    job = await h.claim(job_id)
    await progress(h, job, 0.25)
    await progress(h, job, 0.75)
    await h.report(job, ("log", {"level": "info", "message": "almost"}))
    await h.complete(job, {"text": "hi"})
    return job_id


async def progress(h: Harness, job: Job, value: float) -> None:
    data = {"progress": value, "stage": "working", "message": f"{value:.0%}", "eta_seconds": 1.0}
    await h.report(job, ("progress", data), progress=value, stage="working")


async def test_sse_replays_the_whole_log_and_ends_after_the_terminal_status(h: Harness) -> None:
    job_id = await finished_job(h)

    response = await h.client.get(f"/v1/jobs/{job_id}/events")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    frames = parse_sse(response.text)
    assert frames[0] == {"retry": "2000"}
    events = event_frames(response.text)
    assert [e["id"] for e in events] == [0, 1, 2, 3, 4, 5]
    assert [e["event"] for e in events] == [
        "status",
        "status",
        "progress",
        "progress",
        "log",
        "status",
    ]
    for event in events:
        assert event["data"]["sequence_number"] == event["id"]
        assert event["data"]["type"] == event["event"]
        assert event["data"]["job_id"] == job_id
        assert event["data"]["at"].endswith("Z")
    assert events[2]["data"]["progress"] == 0.25
    assert events[2]["data"]["stage"] == "working"
    assert events[-1]["data"]["status"] == "completed"
    assert response.text.endswith("\n\n")


async def test_last_event_id_resumes_after_that_event(h: Harness) -> None:
    job_id = await finished_job(h)

    response = await h.client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "2"})

    assert [e["id"] for e in event_frames(response.text)] == [3, 4, 5]


async def test_after_query_resumes_and_last_event_id_wins_over_it(h: Harness) -> None:
    job_id = await finished_job(h)

    after = await h.client.get(f"/v1/jobs/{job_id}/events?after=3")
    both = await h.client.get(f"/v1/jobs/{job_id}/events?after=0", headers={"Last-Event-ID": "4"})

    assert [e["id"] for e in event_frames(after.text)] == [4, 5]
    assert [e["id"] for e in event_frames(both.text)] == [5]


async def test_terminal_job_with_nothing_after_the_cursor_is_204(h: Harness) -> None:
    job_id = await finished_job(h)

    at_end = await h.client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "5"})
    beyond = await h.client.get(f"/v1/jobs/{job_id}/events?after=99")

    assert at_end.status_code == beyond.status_code == 204
    assert at_end.content == beyond.content == b""


async def test_live_stream_follows_the_job_with_keepalives_until_it_ends(h: Harness) -> None:
    job_id = (await h.submit())["id"]
    stream = asyncio.create_task(h.client.get(f"/v1/jobs/{job_id}/events"))
    await asyncio.sleep(0.3)  # quiet: keepalives flow
    job = await h.claim(job_id)
    await progress(h, job, 0.5)
    await asyncio.sleep(0.2)
    await h.complete(job, {"text": "hi"})

    response = await asyncio.wait_for(stream, timeout=10)

    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert frames[0] == {"retry": "2000"}
    keepalives = [f for f in frames if f == {":": "keepalive"}]
    assert len(keepalives) >= 2
    events = event_frames(response.text)
    assert [e["id"] for e in events] == [0, 1, 2, 3]
    assert [e["data"].get("status") for e in events] == ["pending", "running", None, "completed"]


async def test_live_stream_ends_on_cancellation(h: Harness) -> None:
    job_id = (await h.submit())["id"]
    stream = asyncio.create_task(
        h.client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "0"})
    )
    await asyncio.sleep(0.1)
    await h.client.post(f"/v1/jobs/{job_id}/cancel")

    response = await asyncio.wait_for(stream, timeout=10)

    events = event_frames(response.text)
    assert [(e["id"], e["data"]["status"]) for e in events] == [(1, "cancelled")]


async def test_json_form_lists_the_stored_events(h: Harness) -> None:
    job_id = await finished_job(h)

    whole = await h.client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"})
    tail = await h.client.get(
        f"/v1/jobs/{job_id}/events?after=3", headers={"Accept": "application/json"}
    )

    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/json"
    listing = whole.json()
    assert listing["object"] == "list"
    assert [e["sequence_number"] for e in listing["data"]] == [0, 1, 2, 3, 4, 5]
    assert listing["data"][4] == {
        "type": "log",
        "sequence_number": 4,
        "job_id": job_id,
        "at": listing["data"][4]["at"],
        "level": "info",
        "message": "almost",
    }
    assert [e["sequence_number"] for e in tail.json()["data"]] == [4, 5]


async def test_json_form_of_a_pending_job_answers_at_once(h: Harness) -> None:
    job_id = (await h.submit())["id"]

    response = await asyncio.wait_for(
        h.client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"}),
        timeout=5,
    )

    assert [event["status"] for event in response.json()["data"]] == ["pending"]


async def test_json_form_pages_through_a_long_log(h: Harness) -> None:
    job_id = (await h.submit())["id"]
    job = await h.claim(job_id)
    for start in range(0, 1500, 500):
        batch = [("log", {"level": "info", "message": str(i)}) for i in range(start, start + 500)]
        await h.report(job, *batch)

    response = await h.client.get(
        f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"}
    )

    numbers = [e["sequence_number"] for e in response.json()["data"]]
    assert numbers == list(range(1502))


async def test_events_of_an_unknown_job_are_404_problems(h: Harness) -> None:
    problem(await h.client.get("/v1/jobs/job_nope/events"), 404, "job-not-found")
    problem(
        await h.client.get("/v1/jobs/job_nope/events", headers={"Accept": "application/json"}),
        404,
        "job-not-found",
    )


@pytest.mark.parametrize("asgi_version", ["2.0", "2.4"])
async def test_a_client_disconnect_stops_the_stream_but_not_the_job(
    h: Harness, asgi_version: str
) -> None:
    job_id = (await h.submit())["id"]
    first_body = asyncio.Event()
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if asgi_version == "2.4" and first_body.is_set():
            raise OSError("the client went away")
        sent.append(message)
        if message["type"] == "http.response.body" and message["body"]:
            first_body.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": asgi_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/v1/jobs/{job_id}/events",
        "raw_path": f"/v1/jobs/{job_id}/events".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }

    try:
        await asyncio.wait_for(h.api(scope, receive, send), timeout=5)
    except ClientDisconnect:
        assert asgi_version == "2.4"

    assert sent[0]["status"] == 200
    job = (await h.client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "pending"
    assert job["cancel_requested"] is False
    claimed = await h.claim(job_id)  # the job still runs as usual
    await h.complete(claimed, {"text": "hi"})
    assert (await h.client.get(f"/v1/jobs/{job_id}/result")).json() == {"text": "hi"}
