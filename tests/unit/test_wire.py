"""The job resource built by hand for speed is exactly what the pydantic schema describes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from longjobs.http.events import sse_frame
from longjobs.http.jobs import job_wire, wire_json
from longjobs.models import Event, Job, JobError, Status, Usage
from longjobs.schemas import EventResource, JobResource

NOW = datetime(2026, 12, 4, 23, 0, 0, 123456, tzinfo=UTC)

JOBS = [
    Job(id="job_pending", tenant="t", kind="k", status=Status.PENDING, input=None,
        created_at=NOW, run_at=NOW),
    Job(id="job_failed", tenant="t", kind="k", status=Status.FAILED,
        input={"text": "é ☃", "n": [1, 2.5, None, True]}, created_at=NOW, run_at=NOW,
        started_at=NOW, finished_at=NOW + timedelta(seconds=3), attempt=2, max_attempts=3,
        error=JobError(type="boom", message="it broke", retryable=True), usage=Usage(7, 9),
        metadata={"team": "a"}, progress=0.25, stage="s", message="m", eta_seconds=1.5,
        priority=-4, cancel_requested=True),
    Job(id="job_done", tenant="t", kind="k", status=Status.COMPLETED, input={}, created_at=NOW,
        run_at=NOW, finished_at=NOW, result={"answer": 42}, result_size=13,
        expires_at=NOW + timedelta(days=365 * 20), progress=1.0),
    Job(id="job_big", tenant="t", kind="k", status=Status.COMPLETED, input={}, created_at=NOW,
        run_at=NOW, result=None, result_size=10_000_000, expires_at=NOW + timedelta(days=1)),
]  # fmt: skip


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.id)
def test_the_wire_job_is_the_schema_s_job(job: Job) -> None:
    wire = wire_json(job_wire(job, root_path="/api", inline_result_bytes=1024))

    as_schema = JobResource.model_validate_json(wire)

    assert json.loads(wire) == json.loads(as_schema.model_dump_json())
    assert as_schema.links.self == f"/api/v1/jobs/{job.id}"


def test_a_non_finite_number_goes_out_as_null_as_pydantic_writes_it() -> None:
    assert json.loads(wire_json({"eta_seconds": float("inf"), "x": float("nan")})) == {
        "eta_seconds": None,
        "x": None,
    }


def test_an_sse_frame_carries_the_event_s_schema_json() -> None:
    event = Event("job_x", 7, "log", NOW, {"message": "ünïcode\nline", "level": "info"})

    frame = sse_frame(event)

    head, data = frame.decode().rstrip("\n").rsplit("\ndata: ", 1)
    assert head == "id: 7\nevent: log"
    assert EventResource.model_validate_json(data).model_dump(mode="json") == json.loads(data)
    assert json.loads(data)["message"] == "ünïcode\nline"
