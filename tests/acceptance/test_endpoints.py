"""API.md's endpoint table, row by row, against a real ``longjobs serve`` over real sockets.

Each row of ``ROWS`` is one promise of the table: a request on a job in a given state, the status
it answers, the headers it must (or must not) carry, and the problem type of an error. Every
answer is also held to the rules of the whole API: a non-2xx body is ``application/problem+json``
with ``type``, ``title``, ``status`` and ``detail``; ``Retry-After`` is whole seconds; no
traceback. The in-process integration tests prove each rule in depth; this is the proof that
the rows hold through uvicorn, on real sockets. ``/v1/responses``, webhooks and the dashboard
are not covered yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.acceptance.harness import (
    get_job,
    read_sse,
    stored_events,
    submit,
    wait_for_status,
    wait_terminal,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

SERVE_ENV = {"LONGJOBS_LEASE_SECONDS": "30"}
"""Rows need running jobs to stay running: no rescue when a busy machine delays a heartbeat."""

PROBLEM_JSON = "application/problem+json"
UNKNOWN_ID = "job_" + "0" * 32
PRESENT = "<present>"
"""An expected header value: any value will do."""

OVER_THE_BODY_LIMIT = b'{"kind": "ledger_job", "input": "' + b"x" * (1024 * 1024) + b'"}'
"""Just over the default 1 MiB body limit."""


# -- jobs in every state, made fresh for each row -------------------------------------------------
def _pending(api: httpx.Client) -> str:
    return submit(api, "sleepy", {"seconds": 600}, delay_seconds=600)


def _running(api: httpx.Client) -> str:
    job_id = submit(api, "sleepy", {"seconds": 600})
    wait_for_status(api, job_id, {"running"}, timeout=30)
    return job_id


def _finished(kind: str, job_input: Any = None, **options: Any) -> Callable[[httpx.Client], str]:
    def make(api: httpx.Client) -> str:
        job_id = submit(api, kind, job_input, **options)
        wait_terminal(api, job_id)
        return job_id

    return make


def _cancelled(api: httpx.Client) -> str:
    job_id = _pending(api)
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    return job_id


def _expired(api: httpx.Client) -> str:
    job_id = _finished("ledger_job", {"steps": 1, "step_ms": 1}, result_ttl_seconds=0.2)(api)
    wait_until(lambda: get_job(api, job_id)["result"] is None, timeout=30, what="the expiry")
    return job_id


JOBS: dict[str, Callable[[httpx.Client], str]] = {
    "pending": _pending,
    "running": _running,
    "completed": _finished("ledger_job", {"steps": 1, "step_ms": 1}),
    "failed": _finished("crash", max_attempts=1),
    "cancelled": _cancelled,
    "expired": _expired,
    "large": _finished("large_result", {"kilobytes": 300}),
}


# -- the rows -------------------------------------------------------------------------------------
Check = Callable[[httpx.Client, httpx.Response, str], None]


@dataclass(frozen=True)
class Row:
    """One promise of the table: ``method path`` on a job in ``state`` answers ``status``."""

    method: str
    path: str
    status: int
    state: str | None = None
    """The job ``{id}`` names: a key of JOBS, or None for an id no job has."""
    problem: str | None = None
    send: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    expect: Mapping[str, str | None] = field(default_factory=dict)
    """Headers of the answer: the value (``{id}`` is the job's id), PRESENT, or None: absent."""
    check: Check | None = None
    """What else the answer must show, given the client, the answer and the job's id."""

    def __str__(self) -> str:
        sent = [f"{name}: {value}" for name, value in self.send.items()]
        sent += [f"{name}={value}" for name, value in self.params.items()]
        on = f" ({', '.join(sent)})" if sent else ""
        job = f" [{self.state or 'unknown'}]" if "{id}" in self.path else ""
        return f"{self.method} {self.path}{job}{on} -> {self.status}"


def _job_body(status: str) -> Check:
    def check(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
        job = response.json()
        assert (job["object"], job["id"], job["status"]) == ("job", job_id, status)

    return check


def _finished_with_result(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    _job_body("completed")(api, response, job_id)
    assert response.json()["result"] is not None


def _failed_inside_the_resource(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    _job_body("failed")(api, response, job_id)
    assert response.json()["error"]["type"] == "ValueError"


def _cancel_requested(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    job = response.json()
    assert job["cancel_requested"] is True
    assert job["status"] in {"running", "cancelled"}
    assert wait_terminal(api, job_id, timeout=30)["status"] == "cancelled"


def _gone_with_its_events_and_result(
    api: httpx.Client, response: httpx.Response, job_id: str
) -> None:
    assert response.content == b""
    for path in ("", "/events", "/result"):
        assert api.get(f"/v1/jobs/{job_id}{path}").status_code == 404


def _the_stored_result(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    assert response.json() == get_job(api, job_id)["result"]


def _large_result_apart(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    job = get_job(api, job_id)
    assert response.json() == {"text": "x" * 300 * 1024}
    assert job["result"] is None
    assert job["links"]["result"] == f"/v1/jobs/{job_id}/result"


def _with_the_error(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    assert response.json()["error"]["type"] == "ValueError"
    assert response.json()["job_id"] == job_id


def _listing(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    assert set(response.json()) == {"object", "data", "next_cursor"}


def _stored_events(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    events = response.json()["data"]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["status"] == "completed"


def _event_stream(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    frames = list(read_sse(iter(response.text.splitlines())))
    assert frames[0].retry is not None
    assert [json.loads(f.data) for f in frames if f.data] == stored_events(api, job_id)


def _kinds(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    kinds = {kind["name"]: kind for kind in response.json()["data"]}
    assert {"ledger_job", "sleepy", "crash"} <= set(kinds)
    assert kinds["ledger_job"]["input_schema"]["properties"].keys() == {"steps", "step_ms"}
    assert set(kinds["ledger_job"]["defaults"]) == {
        "timeout_seconds",
        "max_attempts",
        "result_ttl_seconds",
    }


def _prometheus(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    assert "# TYPE longjobs_" in response.text


def _has_errors(api: httpx.Client, response: httpx.Response, job_id: str) -> None:
    errors = response.json()["errors"]
    assert errors
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)


JOB = "/v1/jobs/{id}"
QUICK = {"kind": "ledger_job", "input": {"steps": 1, "step_ms": 1}}
DELAYED = {"kind": "sleepy", "input": {"seconds": 1}, "delay_seconds": 600}

ROWS = [
    # POST /v1/jobs
    Row("POST", "/v1/jobs", 202, json=QUICK, check=_job_body("pending"),
        expect={"Location": "/v1/jobs/{id}", "Retry-After": PRESENT, "Vary": "Prefer",
                "Preference-Applied": None, "Idempotent-Replayed": None}),
    Row("POST", "/v1/jobs", 200, json=QUICK, send={"Prefer": "wait=30"},
        check=_finished_with_result,
        expect={"Preference-Applied": "wait=30", "Vary": "Prefer", "Retry-After": None}),
    Row("POST", "/v1/jobs", 202, json=DELAYED, send={"Prefer": "wait=1"},
        check=_job_body("pending"),
        expect={"Preference-Applied": "wait=1", "Vary": "Prefer", "Retry-After": PRESENT}),
    Row("POST", "/v1/jobs", 202, json=QUICK, send={"Prefer": "respond-async"},
        expect={"Preference-Applied": "respond-async", "Vary": "Prefer"}),
    Row("POST", "/v1/jobs", 404, problem="unknown-kind", json={"kind": "no_such_kind"}),
    Row("POST", "/v1/jobs", 422, problem="invalid-input", check=_has_errors,
        json={"kind": "ledger_job", "input": {"steps": "many"}}),
    Row("POST", "/v1/jobs", 422, problem="invalid-input", check=_has_errors,
        json={"kind": "ledger_job", "input": {}, "priority": "high", "max_attempts": 0}),
    Row("POST", "/v1/jobs", 413, problem="payload-too-large", content=OVER_THE_BODY_LIMIT),
    Row("POST", "/v1/jobs", 400, problem="malformed-json", content=b'{"kind": '),
    # GET /v1/jobs/{id}
    Row("GET", JOB, 200, "pending", check=_job_body("pending"), expect={"Retry-After": PRESENT}),
    Row("GET", JOB, 200, "running", check=_job_body("running"), expect={"Retry-After": PRESENT}),
    Row("GET", JOB, 200, "completed", check=_finished_with_result, expect={"Retry-After": None}),
    Row("GET", JOB, 200, "failed", check=_failed_inside_the_resource,
        expect={"Retry-After": None}),
    Row("GET", JOB, 200, "cancelled", check=_job_body("cancelled"), expect={"Retry-After": None}),
    Row("GET", JOB, 200, "pending", params={"wait": 1}, check=_job_body("pending"),
        expect={"Retry-After": PRESENT}),
    Row("GET", JOB, 200, "completed", params={"wait": 30}, check=_job_body("completed")),
    Row("GET", JOB, 404, problem="job-not-found"),
    Row("GET", JOB, 422, "pending", problem="invalid-input", params={"wait": -1},
        check=_has_errors),
    # GET /v1/jobs
    Row("GET", "/v1/jobs", 200, check=_listing),
    Row("GET", "/v1/jobs", 422, problem="invalid-input", params={"status": "done"},
        check=_has_errors),
    Row("GET", "/v1/jobs", 422, problem="invalid-input", params={"cursor": "not-a-cursor"},
        check=_has_errors),
    # POST /v1/jobs/{id}/cancel
    Row("POST", JOB + "/cancel", 200, "pending", check=_job_body("cancelled")),
    Row("POST", JOB + "/cancel", 200, "running", check=_cancel_requested),
    Row("POST", JOB + "/cancel", 200, "completed", check=_job_body("completed")),
    Row("POST", JOB + "/cancel", 200, "cancelled", check=_job_body("cancelled")),
    Row("POST", JOB + "/cancel", 404, problem="job-not-found"),
    # DELETE /v1/jobs/{id}
    Row("DELETE", JOB, 204, "completed", check=_gone_with_its_events_and_result),
    Row("DELETE", JOB, 204, "running", check=_gone_with_its_events_and_result),
    Row("DELETE", JOB, 404, problem="job-not-found"),
    # GET /v1/jobs/{id}/result
    Row("GET", JOB + "/result", 200, "completed", check=_the_stored_result,
        expect={"Content-Type": "application/json"}),
    Row("GET", JOB + "/result", 200, "large", check=_large_result_apart,
        expect={"Content-Type": "application/json"}),
    Row("GET", JOB + "/result", 409, "pending", problem="result-not-ready",
        expect={"Retry-After": PRESENT}),
    Row("GET", JOB + "/result", 409, "running", problem="result-not-ready",
        expect={"Retry-After": PRESENT}),
    Row("GET", JOB + "/result", 409, "failed", problem="job-failed", check=_with_the_error),
    Row("GET", JOB + "/result", 409, "cancelled", problem="job-cancelled"),
    Row("GET", JOB + "/result", 410, "expired", problem="result-expired"),
    Row("GET", JOB + "/result", 404, problem="job-not-found"),
    # GET /v1/jobs/{id}/events
    Row("GET", JOB + "/events", 200, "completed", check=_event_stream,
        expect={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}),
    Row("GET", JOB + "/events", 200, "completed", send={"Accept": "application/json"},
        check=_stored_events, expect={"Content-Type": "application/json"}),
    Row("GET", JOB + "/events", 204, "completed", send={"Last-Event-ID": "1000"}),
    Row("GET", JOB + "/events", 204, "cancelled", params={"after": 1000}),
    Row("GET", JOB + "/events", 422, "completed", problem="invalid-input",
        send={"Last-Event-ID": "seven"}, check=_has_errors),
    Row("GET", JOB + "/events", 404, problem="job-not-found"),
    # the rest of the table
    Row("GET", "/v1/kinds", 200, check=_kinds),
    Row("GET", "/healthz", 200),
    Row("GET", "/readyz", 200),
    Row("GET", "/metrics", 200, check=_prometheus,
        expect={"Content-Type": "text/plain; version=1.0.0; charset=utf-8"}),
    # problem+json for requests no row serves
    Row("GET", "/v1/no-such-route", 404, problem="not-found"),
    Row("PUT", "/v1/jobs", 405, problem="method-not-allowed", expect={"Allow": "GET, POST"}),
]  # fmt: skip


@pytest.fixture
def made(api: httpx.Client) -> Iterator[list[str]]:
    """The ids of the jobs a row made; the unfinished ones are cancelled afterwards."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        api.post(f"/v1/jobs/{job_id}/cancel")


def _send(api: httpx.Client, row: Row, job_id: str) -> httpx.Response:
    return api.request(
        row.method,
        row.path.format(id=job_id),
        params=dict(row.params),
        headers=dict(row.send),
        json=row.json,
        content=row.content,
    )


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_each_row_of_the_endpoint_table_holds(api: httpx.Client, made: list[str], row: Row) -> None:
    job_id = UNKNOWN_ID
    if row.state is not None:
        job_id = JOBS[row.state](api)
        made.append(job_id)

    response = _send(api, row, job_id)
    if row.method == "POST" and row.path == "/v1/jobs" and response.is_success:
        job_id = response.json()["id"]
        made.append(job_id)

    assert response.status_code == row.status, response.text
    for name, value in row.expect.items():
        if value is None:
            assert name not in response.headers, f"{name}: {response.headers[name]}"
        elif value == PRESENT:
            assert name in response.headers, f"{name} is missing"
        else:
            assert response.headers.get(name) == value.format(id=job_id), name
    _assert_api_wide_rules(response, row.problem)
    if row.check is not None:
        row.check(api, response, job_id)


def _assert_api_wide_rules(response: httpx.Response, slug: str | None) -> None:
    assert "Traceback" not in response.text
    if "Retry-After" in response.headers:
        assert response.headers["Retry-After"].isdigit()
        assert int(response.headers["Retry-After"]) >= 1
    if response.status_code == 204:
        assert response.content == b""
    if response.is_success:
        assert slug is None
        return
    assert slug is not None, "every error row names its problem type"
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == response.status_code
    assert body["title"]
    assert body["detail"]
    if "retry_after" in body:
        assert response.headers["Retry-After"] == str(body["retry_after"])


# -- rows that take more than one request -------------------------------------------------------
def test_an_idempotency_key_replays_the_job_and_refuses_another_body(
    api: httpx.Client, made: list[str]
) -> None:
    key = {"Idempotency-Key": "endpoint-table-once"}

    first = api.post("/v1/jobs", json=DELAYED, headers=key)
    replay = api.post("/v1/jobs", json=DELAYED, headers=key)
    other = api.post("/v1/jobs", json={**DELAYED, "priority": 5}, headers=key)
    made.append(first.json()["id"])

    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["Location"] == first.headers["Location"]
    assert other.status_code == 422
    _assert_api_wide_rules(other, "idempotency-conflict")


def test_listing_pages_newest_first_with_a_stable_cursor(
    api: httpx.Client, made: list[str]
) -> None:
    listed = [_pending(api) for _ in range(5)]
    meanwhile: list[str] = []
    made += listed
    query: dict[str, str | int] = {"status": "pending", "kind": "sleepy", "limit": 2}

    seen: list[str] = []
    cursor = None
    while True:
        page = api.get("/v1/jobs", params={**query, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [job["id"] for job in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
        meanwhile.append(_pending(api))  # newer than the cursor: on no later page
    made += meanwhile

    assert seen == listed[::-1]
    assert meanwhile


def test_the_websocket_row_streams_the_events_and_takes_a_cancel(
    api: httpx.Client, made: list[str]
) -> None:
    base = str(api.base_url).replace("http://", "ws://", 1)
    done = JOBS["completed"](api)
    running = _running(api)
    made.append(running)

    with connect(f"{base}/v1/jobs/{done}/ws") as ws:
        frames = _frames_until_closed(ws.recv)
        closed_with = ws.close_code
    with connect(f"{base}/v1/jobs/{running}/ws?after=1") as ws:
        ws.send(json.dumps({"type": "cancel"}))
        after_cancel = _frames_until_closed(ws.recv)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{base}/v1/jobs/{UNKNOWN_ID}/ws").close()

    assert frames == stored_events(api, done)
    assert closed_with == 1000
    assert after_cancel[-1]["status"] == "cancelled"
    assert after_cancel[0]["sequence_number"] == 2
    assert refused.value.response.status_code == 404
    assert refused.value.response.headers["Content-Type"] == PROBLEM_JSON


def _frames_until_closed(receive: Callable[..., Any]) -> list[dict[str, Any]]:
    frames = []
    try:
        while True:
            frames.append(json.loads(receive(timeout=30)))
    except ConnectionClosed:
        return frames
