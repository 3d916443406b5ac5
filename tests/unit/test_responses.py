"""How a response job's log maps to the Responses API: ids, statuses, the stream events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from longjobs.models import Event, Job, JobError, Status, Usage
from longjobs.responses import (
    ResponseEvents,
    ResponseResult,
    job_id_of,
    response_id,
    response_object,
)

NOW = datetime(2026, 12, 5, tzinfo=UTC)
REQUEST = {"model": "m", "input": "hi", "background": True}


def job(status: Status, **fields: Any) -> Job:
    return Job(
        id="job_abc",
        tenant="t",
        kind="response",
        status=status,
        created_at=NOW,
        input=REQUEST,
        **fields,
    )


def log(*entries: tuple[str, dict[str, Any]]) -> list[Event]:
    return [Event("job_abc", n, kind, NOW, data) for n, (kind, data) in enumerate(entries)]


def status(value: str) -> tuple[str, dict[str, Any]]:
    return ("status", {"status": value})


def delta(text: str) -> tuple[str, dict[str, Any]]:
    return ("output", {"delta": text})


def mapped(final_job: Job, events: list[Event], text: str = "") -> list[dict[str, Any]]:
    mapper = ResponseEvents(final_job)
    final = response_object(final_job, text)
    out: list[dict[str, Any]] = []
    for event in events:
        out += mapper.feed(event, final)
    return out


def test_ids_map_both_ways_and_nothing_else_maps() -> None:
    assert response_id("job_abc") == "resp_abc"
    assert job_id_of("resp_abc") == "job_abc"
    assert job_id_of("job_abc") is None
    assert job_id_of("resp_" + "x" * 200) is None


def test_a_retried_job_streams_one_lifecycle_and_every_delta_once() -> None:
    events = log(
        status("pending"),
        status("running"),
        delta("a"),
        ("progress", {"progress": 0.5}),
        status("pending"),  # its worker died: retried
        status("running"),
        delta("b"),
        ("usage", {"input_tokens": 1, "output_tokens": 2}),
        status("completed"),
    )
    done = job(Status.COMPLETED, usage=Usage(1, 2))

    out = mapped(done, events, "ab")

    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert [e["type"] for e in out] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[7]["text"] == "ab"
    assert out[9]["item"]["status"] == "completed"
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == "ab"
    assert out == mapped(done, events, "ab")  # a replay is the same stream


def test_failed_and_cancelled_streams_end_with_their_status() -> None:
    failed = job(Status.FAILED, error=JobError(type="upstream_error", message="answered 400"))
    out = mapped(failed, log(status("pending"), status("running"), status("failed")))
    assert [e["type"] for e in out][-1] == "response.failed"
    assert out[-1]["response"]["error"]["message"] == "upstream_error: answered 400"
    assert all("error" not in e for e in out)

    cancelled = job(Status.CANCELLED)
    out = mapped(
        cancelled, log(status("pending"), status("running"), delta("x"), status("cancelled")), "x"
    )
    assert [e["type"] for e in out][-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.cancelled",
    ]
    assert out[-2]["item"]["status"] == "incomplete"
    assert out[-1]["response"]["status"] == "cancelled"


def test_statuses_follow_the_job_and_the_finish_reason() -> None:
    assert response_object(job(Status.PENDING), "")["status"] == "queued"
    assert response_object(job(Status.RUNNING), "so far")["output"][0]["status"] == "in_progress"
    complete = response_object(job(Status.COMPLETED), "t", ResponseResult(text="t"))
    assert complete["status"] == "completed"
    cut = ResponseResult(text="t", finish_reason="length")
    incomplete = response_object(job(Status.COMPLETED), "t", cut)
    assert incomplete["status"] == "incomplete"
    assert incomplete["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response_object(job(Status.CANCELLED), "")["output"] == []
