"""Every non-2xx answer is an RFC 9457 problem with a stable type, never a traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from longjobs.backends.sqlite import SQLiteBackend
from tests.integration.http_harness import Harness, open_harness, problem


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, max_body_bytes=1024) as harness:
        yield harness


# -- routing --------------------------------------------------------------------------------------
async def test_unknown_route_is_a_404_problem(h: Harness) -> None:
    body = problem(await h.client.get("/v2/nothing"), 404, "not-found")
    assert "/v2/nothing" in body["detail"]


async def test_trailing_slash_is_not_redirected_but_a_404_problem(h: Harness) -> None:
    problem(await h.client.get("/v1/jobs/"), 404, "not-found")


async def test_wrong_method_is_a_405_problem_with_allow(h: Harness) -> None:
    response = await h.client.put("/v1/jobs")

    problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, POST"


async def test_wrong_method_on_a_job_is_a_405_problem(h: Harness) -> None:
    problem(await h.client.patch("/v1/jobs/job_x"), 405, "method-not-allowed")
    problem(await h.client.get("/v1/jobs/job_x/cancel"), 405, "method-not-allowed")


# -- body: size and JSON --------------------------------------------------------------------------
async def test_declared_content_length_over_the_limit_is_413(h: Harness) -> None:
    body = b'{"kind": "echo", "input": {"text": "' + b"x" * 2000 + b'"}}'

    response = await h.client.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
    )

    problem(response, 413, "payload-too-large")
    assert (await h.client.get("/v1/jobs")).json()["data"] == []


async def test_chunked_body_over_the_limit_is_413_before_it_is_all_read(h: Harness) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"kind": "echo", "input": {"text": "'
        for _ in range(1000):
            sent += 1
            yield b"x" * 100
        yield b'"}}'

    response = await h.client.post("/v1/jobs", content=chunks())

    problem(response, 413, "payload-too-large")
    assert sent < 20  # the 1,024-byte limit is passed after about 10 chunks of 100 bytes


async def test_a_body_just_under_the_limit_is_accepted(h: Harness) -> None:
    text = "x" * (1024 - len('{"kind":"echo","input":{"text":""}}'))
    body = f'{{"kind":"echo","input":{{"text":"{text}"}}}}'.encode()
    assert len(body) == 1024

    response = await h.client.post("/v1/jobs", content=body)

    assert response.status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b'{"kind": "echo",}',
        b'{"kind": "echo", "input": {"n": NaN}}',
        b'{"kind": "echo", "input": Infinity}',
        b"\xff\xfe\x00garbage",
        b"[" * 50_000 + b"]" * 50_000,
    ],
    ids=["syntax", "empty", "trailing-comma", "nan", "infinity", "bad-utf8", "deep"],
)
async def test_malformed_json_is_a_400_problem(tmp_path: Path, body: bytes) -> None:
    async with open_harness(tmp_path, max_body_bytes=200_000) as h:
        response = await h.client.post("/v1/jobs", content=body)

    detail = problem(response, 400, "malformed-json")["detail"]
    assert "Traceback" not in detail


async def test_a_body_nested_too_deeply_to_be_shown_again_is_refused(h: Harness) -> None:
    def nested(levels: int) -> Any:
        value: Any = {}
        for _ in range(levels - 1):
            value = [value]
        return value

    # 100 levels with the envelope and metadata around it: the deepest body accepted
    deepest = {"kind": "echo", "input": {"text": "a"}, "metadata": {"m": nested(98)}}
    too_deep = {"kind": "echo", "input": {"text": "a"}, "metadata": {"m": nested(300)}}

    accepted = await h.client.post("/v1/jobs", json=deepest)
    refused = await h.client.post("/v1/jobs", json=too_deep)

    assert accepted.status_code == 202, accepted.text
    assert (await h.client.get(f"/v1/jobs/{accepted.json()['id']}")).status_code == 200
    assert "nested too deeply" in problem(refused, 400, "malformed-json")["detail"]
    listing = await h.client.get("/v1/jobs")
    assert listing.status_code == 200
    assert [job["id"] for job in listing.json()["data"]] == [accepted.json()["id"]]


# -- validation -----------------------------------------------------------------------------------
async def test_each_bad_envelope_field_is_listed(h: Harness) -> None:
    response = await h.client.post(
        "/v1/jobs",
        json={
            "kind": "echo",
            "input": {"text": "a"},
            "priority": "high",
            "max_attempts": 0,
            "timeout_seconds": -1,
            "delay_seconds": "soon",
            "metadata": [1],
            "colour": "blue",
        },
    )

    body = problem(response, 422, "invalid-input")
    locs = sorted(tuple(error["loc"]) for error in body["errors"])
    assert locs == sorted(
        [
            ("body", "priority"),
            ("body", "max_attempts"),
            ("body", "timeout_seconds"),
            ("body", "delay_seconds"),
            ("body", "metadata"),
            ("body", "colour"),
        ]
    )
    for error in body["errors"]:
        assert set(error) == {"loc", "msg", "type"}
    assert "high" not in response.text  # inputs are never echoed back


async def test_missing_kind_and_a_non_object_body_are_422(h: Harness) -> None:
    missing = problem(await h.client.post("/v1/jobs", json={"input": {}}), 422, "invalid-input")
    listed = problem(await h.client.post("/v1/jobs", json=[1, 2]), 422, "invalid-input")

    assert missing["errors"][0]["loc"] == ["body", "kind"]
    assert missing["errors"][0]["type"] == "missing"
    assert listed["errors"][0]["loc"] == ["body"]


async def test_input_failing_the_kind_schema_lists_each_field(h: Harness) -> None:
    response = await h.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"count": 0, "extra": "fine"}}
    )

    body = problem(response, 422, "invalid-input")
    errors = {tuple(error["loc"]): error["type"] for error in body["errors"]}
    assert errors == {
        ("body", "input", "text"): "missing",
        ("body", "input", "count"): "greater_than_equal",
    }


async def test_input_is_held_to_its_json_schema_without_coercion(h: Harness) -> None:
    async def submit(job_input: Any) -> Any:
        return await h.client.post("/v1/jobs", json={"kind": "echo", "input": job_input})

    coerced = {
        "count as a string": await submit({"text": "a", "count": "2"}),
        "count as a boolean": await submit({"text": "a", "count": True}),
        "count with a fraction": await submit({"text": "a", "count": 2.5}),
        "text as a number": await submit({"text": 5}),
    }
    whole = await submit({"text": "a", "count": 2.0})

    for case, response in coerced.items():
        body = problem(response, 422, "invalid-input")
        assert body["errors"][0]["loc"][:2] == ["body", "input"], case
    assert whole.status_code == 202, whole.text
    assert whole.json()["input"] == {"text": "a", "count": 2}


async def test_unknown_kind_is_a_404_problem(h: Harness) -> None:
    response = await h.client.post("/v1/jobs", json={"kind": "nope", "input": {}})

    body = problem(response, 404, "unknown-kind")
    assert body["kind"] == "nope"


async def test_bad_query_and_header_values_are_422_problems(h: Harness) -> None:
    job = (await h.client.post("/v1/jobs", json={"kind": "echo", "input": {"text": "a"}})).json()

    wait = await h.client.get(f"/v1/jobs/{job['id']}?wait=-1")
    after = await h.client.get(f"/v1/jobs/{job['id']}/events?after=x")
    last_id = await h.client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    key = await h.client.post(
        "/v1/jobs", json={"kind": "tick"}, headers={"Idempotency-Key": "k" * 256}
    )

    assert problem(wait, 422, "invalid-input")["errors"][0]["loc"] == ["query", "wait"]
    assert problem(after, 422, "invalid-input")["errors"][0]["loc"] == ["query", "after"]
    assert problem(last_id, 422, "invalid-input")["errors"][0]["loc"] == [
        "header",
        "last-event-id",
    ]
    assert problem(key, 422, "invalid-input")["errors"][0]["loc"] == ["header", "idempotency-key"]


# -- server faults --------------------------------------------------------------------------------
async def test_an_unexpected_exception_is_a_500_problem_without_details(tmp_path: Path) -> None:
    async with open_harness(tmp_path, raise_app_exceptions=False) as h:
        response = await h.client.post(
            "/v1/jobs", json={"kind": "explosive", "input": {"fuse": "lit"}}
        )

    body = problem(response, 500, "internal")
    assert "secret-canary" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert set(body) == {"type", "title", "status", "detail"}


async def test_an_unexpected_exception_in_a_submission_is_logged_for_the_operator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_harness(tmp_path, raise_app_exceptions=False) as h:
        response = await h.client.post(
            "/v1/jobs", json={"kind": "explosive", "input": {"fuse": "lit"}}
        )

    problem(response, 500, "internal")
    [record] = [r for r in caplog.records if r.name == "longjobs.http" and r.exc_info]
    assert record.levelname == "ERROR"


async def test_a_locked_store_answers_503_with_retry_after(h: Harness, tmp_path: Path) -> None:
    # The real SQLite backend with a short lock timeout; another connection holds the write lock.
    backend = SQLiteBackend(h.app.database_url, h.app.settings, lock_timeout=0.2)
    await backend.open()
    await h.app.close()
    h.app._backend = backend  # no public way to choose the lock timeout of the App's backend
    locker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        response = await h.client.post("/v1/jobs", json={"kind": "echo", "input": {"text": "a"}})
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    body = problem(response, 503, "storage-unavailable")
    assert response.headers["retry-after"] == "1"
    assert body["retry_after"] == 1.0
    assert "SQLite" not in body["detail"]
    retried = await h.client.post("/v1/jobs", json={"kind": "echo", "input": {"text": "a"}})
    assert retried.status_code == 202


async def test_every_problem_body_is_problem_json(h: Harness) -> None:
    responses = [
        await h.client.get("/nowhere"),
        await h.client.delete("/v1/kinds"),
        await h.client.get("/v1/jobs/job_missing/events"),
        await h.client.get("/v1/jobs/job_missing/events", headers={"Accept": "application/json"}),
        await h.client.get("/v1/jobs?limit=-5"),
        await h.client.post("/v1/jobs", content=b"}"),
    ]

    for response in responses:
        assert response.status_code >= 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].startswith("/problems/")
