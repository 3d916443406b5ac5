"""The /v1/jobs and /v1/kinds routes against a real SQLite store, as API.md specifies them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from longjobs import JobError
from tests.integration.http_harness import Harness, open_harness, problem

JOB_FIELDS = {
    "id", "object", "kind", "status", "progress", "stage", "message", "eta_seconds", "input",
    "result", "error", "cancel_requested", "attempt", "max_attempts", "priority", "metadata",
    "webhook", "usage", "created_at", "started_at", "finished_at", "expires_at", "links",
}  # fmt: skip


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, inline_result_bytes=64) as harness:
        yield harness


# -- submit ---------------------------------------------------------------------------------------
async def test_submit_answers_202_with_the_job_location_and_retry_after(h: Harness) -> None:
    response = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "hello", "count": 2}}
    )

    assert response.status_code == 202
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert job["id"].startswith("job_")
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert response.headers["retry-after"] == "1"
    assert response.headers["vary"] == "Prefer"
    assert response.headers["content-type"] == "application/json"
    assert job["object"] == "job"
    assert job["status"] == "pending"
    assert job["input"] == {"text": "hello", "count": 2}
    assert job["result"] is None
    assert job["error"] is None
    assert job["max_attempts"] == 2
    assert job["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert job["created_at"].endswith("Z")
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "events": f"/v1/jobs/{job['id']}/events",
        "result": f"/v1/jobs/{job['id']}/result",
        "cancel": f"/v1/jobs/{job['id']}/cancel",
    }


async def test_submit_options_are_stored_and_internals_are_not_shown(h: Harness) -> None:
    job = await h.submit(
        input={"text": "x"},
        priority=7,
        max_attempts=5,
        timeout_seconds=12.5,
        result_ttl_seconds=60,
        delay_seconds=0,
        metadata={"customer": "acme", "tags": ["a"]},
    )

    fetched = (await h.client.get(f"/v1/jobs/{job['id']}")).json()
    assert fetched["priority"] == 7
    assert fetched["max_attempts"] == 5
    assert fetched["metadata"] == {"customer": "acme", "tags": ["a"]}
    for internal in ("tenant", "checkpoint", "lease_owner", "idempotency_key", "result_size"):
        assert internal not in fetched


async def test_integer_options_may_be_written_as_whole_floats(h: Harness) -> None:
    # JSON does not tell 3 from 3.0, nor does the JSON Schema "integer" the document gives.
    whole = await h.client.post(
        "/v1/jobs",
        json={"kind": "echo", "input": {"text": "x"}, "priority": 3.0, "max_attempts": 2.0},
    )
    fraction = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "x"}, "priority": 3.5}
    )

    assert whole.status_code == 202, whole.text
    assert (whole.json()["priority"], whole.json()["max_attempts"]) == (3, 2)
    assert fraction.status_code == 422
    assert [error["loc"] for error in fraction.json()["errors"]] == [["body", "priority"]]


async def test_input_defaults_of_the_kind_schema_are_filled_in(h: Harness) -> None:
    job = await h.submit(input={"text": "x"})

    assert job["input"] == {"text": "x", "count": 1}


async def test_a_kind_without_input_takes_a_body_without_input(h: Harness) -> None:
    response = await h.client.post("/v1/jobs", json={"kind": "tick"})

    assert response.status_code == 202
    assert response.json()["kind"] == "tick"


# -- Prefer ---------------------------------------------------------------------------------------
async def test_prefer_wait_answers_200_with_the_finished_job(tmp_path: Path) -> None:
    async with open_harness(tmp_path, with_worker=True, max_wait_seconds=10) as h:
        response = await h.client.post(
            "/v1/jobs",
            json={"kind": "echo", "input": {"text": "ab", "count": 3}},
            headers={"Prefer": "wait=30"},
        )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["result"] == {"text": "ababab"}
    assert response.headers["preference-applied"] == "wait=10"
    assert response.headers["vary"] == "Prefer"
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    assert "retry-after" not in response.headers


async def test_prefer_wait_is_capped_then_answers_202(tmp_path: Path) -> None:
    async with open_harness(tmp_path, max_wait_seconds=0.3) as h:
        started = time.monotonic()
        response = await h.client.post(
            "/v1/jobs", json={"kind": "echo", "input": {"text": "a"}}, headers={"Prefer": "wait=60"}
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert response.headers["preference-applied"] == "wait=0.3"
    assert response.headers["retry-after"] == "1"
    assert 0.25 <= elapsed < 5


async def test_prefer_respond_async_answers_202_at_once(h: Harness) -> None:
    response = await h.client.post(
        "/v1/jobs",
        json={"kind": "echo", "input": {"text": "a"}},
        headers={"Prefer": "respond-async"},
    )

    assert response.status_code == 202
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["vary"] == "Prefer"


async def test_malformed_prefer_values_are_ignored(h: Harness) -> None:
    response = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "a"}}, headers={"Prefer": "wait=soon"}
    )

    assert response.status_code == 202
    assert "preference-applied" not in response.headers


# -- Idempotency-Key ------------------------------------------------------------------------------
async def test_idempotency_key_replay_answers_200_with_the_original_job(h: Harness) -> None:
    body = {"kind": "echo", "input": {"text": "once"}}
    headers = {"Idempotency-Key": "order-42"}

    first = await h.client.post("/v1/jobs", json=body, headers=headers)
    second = await h.client.post("/v1/jobs", json=body, headers=headers)

    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    listing = (await h.client.get("/v1/jobs")).json()
    assert [job["id"] for job in listing["data"]] == [first.json()["id"]]


async def test_idempotency_key_with_another_body_is_a_422_conflict(h: Harness) -> None:
    headers = {"Idempotency-Key": "order-43"}
    await h.client.post("/v1/jobs", json={"kind": "echo", "input": {"text": "a"}}, headers=headers)

    other_input = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "b"}}, headers=headers
    )
    other_options = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "a"}, "priority": 3}, headers=headers
    )

    problem(other_input, 422, "idempotency-conflict")
    problem(other_options, 422, "idempotency-conflict")
    assert len((await h.client.get("/v1/jobs")).json()["data"]) == 1


# -- GET one --------------------------------------------------------------------------------------
async def test_get_sets_retry_after_only_while_not_terminal(h: Harness) -> None:
    job = await h.submit(input={"text": "hey"})

    pending = await h.client.get(f"/v1/jobs/{job['id']}")
    await h.run(job["id"], {"text": "hey"})
    completed = await h.client.get(f"/v1/jobs/{job['id']}")

    assert pending.status_code == 200
    assert pending.headers["retry-after"] == "1"
    assert completed.status_code == 200
    assert "retry-after" not in completed.headers
    body = completed.json()
    assert body["status"] == "completed"
    assert body["result"] == {"text": "hey"}
    assert body["attempt"] == 1
    assert body["started_at"].endswith("Z")
    assert body["finished_at"].endswith("Z")
    assert body["expires_at"].endswith("Z")


async def test_a_result_over_the_inline_limit_is_only_served_by_result(h: Harness) -> None:
    job = await h.submit()
    big = {"text": "x" * 500}
    await h.run(job["id"], big)

    fetched = (await h.client.get(f"/v1/jobs/{job['id']}")).json()
    result = await h.client.get(f"/v1/jobs/{job['id']}/result")

    assert fetched["status"] == "completed"
    assert fetched["result"] is None
    assert fetched["links"]["result"] == f"/v1/jobs/{job['id']}/result"
    assert result.status_code == 200
    assert result.json() == big


async def test_a_multi_megabyte_result_is_streamed_whole_with_its_length(h: Harness) -> None:
    job = await h.submit()
    big = {"text": "y" * (3 * 1024 * 1024)}
    await h.run(job["id"], big)

    async with h.client.stream("GET", f"/v1/jobs/{job['id']}/result") as response:
        parts = [part async for part in response.aiter_raw()]
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        length = int(response.headers["content-length"])

    body = b"".join(parts)
    assert length == len(body) == len(json.dumps(big).encode())
    assert json.loads(body) == big


async def test_wait_returns_as_soon_as_the_status_changes(h: Harness) -> None:
    job = await h.submit()

    async def claim_later() -> None:
        await asyncio.sleep(0.2)
        await h.claim(job["id"])

    claimer = asyncio.create_task(claim_later())
    started = time.monotonic()
    response = await h.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30})
    await claimer

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.headers["retry-after"] == "1"
    assert time.monotonic() - started < 1.9  # well before the 2 s cap


async def test_wait_is_capped_by_max_wait_seconds(tmp_path: Path) -> None:
    async with open_harness(tmp_path, max_wait_seconds=0.3) as h:
        job = await h.submit()
        started = time.monotonic()
        response = await h.client.get(f"/v1/jobs/{job['id']}?wait=60")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert 0.25 <= elapsed < 5


async def test_unknown_job_is_404_problem(h: Harness) -> None:
    response = await h.client.get("/v1/jobs/job_doesnotexist")

    body = problem(response, 404, "job-not-found")
    assert body["job_id"] == "job_doesnotexist"


# -- cancel and delete ----------------------------------------------------------------------------
async def test_cancel_pending_job_is_cancelled_at_once(h: Harness) -> None:
    job = await h.submit()

    response = await h.client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "retry-after" not in response.headers


async def test_cancel_running_job_sets_cancel_requested(h: Harness) -> None:
    job = await h.submit()
    await h.claim(job["id"])

    response = await h.client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    assert response.headers["retry-after"] == "1"


async def test_cancel_is_idempotent_on_a_terminal_job(h: Harness) -> None:
    job = await h.submit()
    await h.run(job["id"], {"text": "hi"})

    first = await h.client.post(f"/v1/jobs/{job['id']}/cancel")
    second = await h.client.post(f"/v1/jobs/{job['id']}/cancel")

    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "completed"


async def test_cancel_unknown_job_is_404_problem(h: Harness) -> None:
    problem(await h.client.post("/v1/jobs/job_nope/cancel"), 404, "job-not-found")


async def test_delete_answers_204_then_the_job_is_gone(h: Harness) -> None:
    job = await h.submit()
    await h.run(job["id"], {"text": "hi"})

    deleted = await h.client.delete(f"/v1/jobs/{job['id']}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    problem(await h.client.get(f"/v1/jobs/{job['id']}"), 404, "job-not-found")
    problem(await h.client.get(f"/v1/jobs/{job['id']}/result"), 404, "job-not-found")
    problem(await h.client.delete(f"/v1/jobs/{job['id']}"), 404, "job-not-found")


# -- result ---------------------------------------------------------------------------------------
async def test_result_of_a_completed_job_is_the_stored_json(h: Harness) -> None:
    job = await h.submit()
    await h.run(job["id"], {"text": "done", "n": [1, 2]})

    response = await h.client.get(f"/v1/jobs/{job['id']}/result")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"text": "done", "n": [1, 2]}


async def test_result_of_a_pending_or_running_job_is_409_with_retry_after(h: Harness) -> None:
    job = await h.submit()

    pending = await h.client.get(f"/v1/jobs/{job['id']}/result")
    await h.claim(job["id"])
    running = await h.client.get(f"/v1/jobs/{job['id']}/result")

    for response, status in ((pending, "pending"), (running, "running")):
        body = problem(response, 409, "result-not-ready")
        assert response.headers["retry-after"] == "1"
        assert body["retry_after"] == 1
        assert body["job_id"] == job["id"]
        assert body["job_status"] == status


async def test_result_of_a_failed_job_is_409_with_its_error(h: Harness) -> None:
    job = await h.submit()
    running = await h.claim(job["id"])
    await h.fail(running, JobError(type="upstream_down", message="model 503", retryable=False))

    response = await h.client.get(f"/v1/jobs/{job['id']}/result")
    status = (await h.client.get(f"/v1/jobs/{job['id']}")).json()

    body = problem(response, 409, "job-failed")
    assert body["error"] == {"type": "upstream_down", "message": "model 503", "retryable": False}
    assert status["status"] == "failed"
    assert status["error"] == body["error"]


async def test_result_of_a_cancelled_job_is_409_cancelled(h: Harness) -> None:
    job = await h.submit()
    await h.client.post(f"/v1/jobs/{job['id']}/cancel")

    body = problem(await h.client.get(f"/v1/jobs/{job['id']}/result"), 409, "job-cancelled")
    assert body["job_id"] == job["id"]


async def test_result_after_its_ttl_is_410(h: Harness) -> None:
    job = await h.submit(result_ttl_seconds=0.05)
    await h.run(job["id"], {"text": "short-lived"})
    await asyncio.sleep(0.2)

    response = await h.client.get(f"/v1/jobs/{job['id']}/result")
    fetched = (await h.client.get(f"/v1/jobs/{job['id']}")).json()

    body = problem(response, 410, "result-expired")
    assert body["job_id"] == job["id"]
    assert fetched["status"] == "completed"
    assert fetched["result"] is None


# -- kinds and probes -----------------------------------------------------------------------------
async def test_kinds_lists_names_schemas_and_defaults(h: Harness) -> None:
    response = await h.client.get("/v1/kinds")

    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    kinds = {kind["name"]: kind for kind in listing["data"]}
    assert list(kinds) == ["echo", "explosive", "response", "tick"]  # with the built-in kind
    assert kinds["response"]["input_schema"]["required"] == ["model", "input"]
    echo = kinds["echo"]
    assert echo["description"] == "Repeat the text ``count`` times."
    assert echo["input_schema"]["required"] == ["text"]
    assert set(echo["input_schema"]["properties"]) == {"text", "count"}
    assert echo["output_schema"]["type"] == "object"
    assert echo["defaults"] == {
        "timeout_seconds": 30.0,
        "max_attempts": 2,
        "result_ttl_seconds": 600.0,
    }
    assert kinds["tick"]["input_schema"] == {}
    assert kinds["tick"]["defaults"]["result_ttl_seconds"] == 86400.0


async def test_healthz_and_readyz_answer_ok(h: Harness) -> None:
    health = await h.client.get("/healthz")
    ready = await h.client.get("/readyz")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
