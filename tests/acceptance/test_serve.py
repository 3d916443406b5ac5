"""``longjobs serve`` as a real process on a temporary SQLite file, spoken to over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import (
    APP,
    LONGJOBS,
    ROOT,
    TERMINAL,
    Cluster,
    LongjobsProcess,
    SSEFrame,
    free_port,
    get_job,
    read_sse,
    stored_events,
    submit,
    wait_for_status,
    wait_terminal,
    wait_until,
)
from tests.acceptance.ledger import read_ledger

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

PROBLEM_JSON = "application/problem+json"


def ledger_of(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    return [line for line in read_ledger(cluster.ledger_path) if line["job_id"] == job_id]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


# -- the happy path --------------------------------------------------------------------------------
def test_submit_answers_202_then_progress_then_completed_with_result(api: httpx.Client) -> None:
    response = api.post(
        "/v1/jobs", json={"kind": "ledger_job", "input": {"steps": 8, "step_ms": 120}}
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["id"].startswith("job_")
    assert job["status"] == "pending"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert int(response.headers["retry-after"]) >= 1

    snapshots = []
    deadline = time.monotonic() + 60
    while job["status"] not in TERMINAL and time.monotonic() < deadline:
        job = get_job(api, job["id"])
        snapshots.append(job)
        time.sleep(0.03)
    assert job["status"] == "completed"
    running = [s for s in snapshots if s["status"] == "running" and 0 < s["progress"] < 1]
    assert running, "no snapshot showed the job running with partial progress"
    assert {s["stage"] for s in running} == {"stepping"}
    assert all(s["message"].startswith("step ") for s in running)
    progress = [s["progress"] for s in snapshots if s["status"] == "running"]
    assert progress == sorted(progress), "progress went backwards within one attempt"

    assert job["progress"] == 1.0
    assert job["message"] == "step 8 of 8"
    assert job["attempt"] == 1
    expected = {"job_id": job["id"], "attempt": 1, "resumed_from": 0}
    assert {k: job["result"][k] for k in expected} == expected

    result = api.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json() == job["result"]
    final = api.get(f"/v1/jobs/{job['id']}")
    assert "retry-after" not in final.headers


def test_a_status_poll_answers_retry_after_while_the_job_runs(api: httpx.Client) -> None:
    job_id = submit(api, "sleepy", {"seconds": 30})
    wait_for_status(api, job_id, {"running"}, timeout=30)

    response = api.get(f"/v1/jobs/{job_id}")

    assert response.status_code == 200
    assert int(response.headers["retry-after"]) >= 1
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def test_result_of_an_unfinished_job_is_409_with_retry_after(api: httpx.Client) -> None:
    job_id = submit(api, "sleepy", {"seconds": 30}, delay_seconds=60)

    response = api.get(f"/v1/jobs/{job_id}/result")

    body = assert_problem(response, 409, "result-not-ready")
    assert body["job_id"] == job_id
    assert int(response.headers["retry-after"]) >= 1
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


# -- events ----------------------------------------------------------------------------------------
def test_event_stream_is_gap_free_and_ends_after_the_terminal_status(api: httpx.Client) -> None:
    job_id = submit(api, "ledger_job", {"steps": 5, "step_ms": 60})

    frames = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = list(read_sse(response.iter_lines()))  # returns only when the server ends it

    assert frames[0].retry is not None
    assert frames[0].retry > 0
    events = [json.loads(frame.data) for frame in frames if frame.data]
    ids = [int(frame.id) for frame in frames if frame.id is not None]
    assert ids == list(range(len(events))), "event ids must be gap-free from 0"
    assert [e["sequence_number"] for e in events] == ids
    assert [frame.event for frame in frames if frame.data] == [e["type"] for e in events]
    assert all(e["job_id"] == job_id for e in events)
    statuses = [e["status"] for e in events if e["type"] == "status"]
    assert statuses == ["pending", "running", "completed"]
    assert events[-1]["type"] == "status"
    assert events[-1]["status"] == "completed"
    progress = [e["progress"] for e in events if e["type"] == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0

    assert stored_events(api, job_id) == events


def test_event_stream_resumes_after_last_event_id(api: httpx.Client) -> None:
    job_id = submit(api, "ledger_job", {"steps": 3, "step_ms": 20})
    wait_terminal(api, job_id)
    events = stored_events(api, job_id)
    last = events[-1]["sequence_number"]

    with api.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(last - 2)}
    ) as response:
        assert response.status_code == 200
        frames = [frame for frame in read_sse(response.iter_lines()) if frame.data]
    after_last = api.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)})

    assert [int(frame.id or -1) for frame in frames] == [last - 1, last]
    assert [json.loads(frame.data) for frame in frames] == events[-2:]
    assert after_last.status_code == 204


# -- cancellation ----------------------------------------------------------------------------------
def test_cancel_of_a_pending_job_is_immediate(api: httpx.Client, served: Cluster) -> None:
    job_id = submit(api, "sleepy", {"seconds": 1}, delay_seconds=60)

    response = api.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert get_job(api, job_id)["status"] == "cancelled"
    again = api.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert_problem(api.get(f"/v1/jobs/{job_id}/result"), 409, "job-cancelled")
    statuses = [e["status"] for e in stored_events(api, job_id) if e["type"] == "status"]
    assert statuses == ["pending", "cancelled"]
    assert ledger_of(served, job_id) == [], "a cancelled pending job must never start"


def test_cancel_of_a_running_job_runs_its_cleanup(api: httpx.Client, served: Cluster) -> None:
    job_id = submit(api, "sleepy", {"seconds": 60})
    wait_for_status(api, job_id, {"running"}, timeout=30)
    wait_until(lambda: ledger_of(served, job_id), timeout=10, what="the handler to start")

    response = api.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    assert response.json()["status"] in {"running", "cancelled"}
    job = wait_terminal(api, job_id, timeout=20)
    assert job["status"] == "cancelled"
    assert job["result"] is None
    cleanups = {line["via"] for line in ledger_of(served, job_id) if line["event"] == "cleanup"}
    assert cleanups == {"on_cancel", "finally"}
    assert_problem(api.get(f"/v1/jobs/{job_id}/result"), 409, "job-cancelled")
    statuses = [e for e in stored_events(api, job_id) if e["type"] == "status"]
    assert [e["status"] for e in statuses][-1] == "cancelled"
    requested = [e for e in statuses if e.get("detail", {}).get("cancel_requested")]
    assert [e["status"] for e in requested] == ["running"]


# -- handler faults --------------------------------------------------------------------------------
def test_a_crash_fails_with_its_error_type_and_the_server_keeps_serving(
    api: httpx.Client, served: Cluster
) -> None:
    once = submit(api, "crash", max_attempts=1)
    twice = submit(api, "crash", max_attempts=2)

    failed_once = wait_terminal(api, once, timeout=30)
    failed_twice = wait_terminal(api, twice, timeout=30)
    healthy = wait_terminal(api, submit(api, "ledger_job", {"steps": 2, "step_ms": 10}))

    assert failed_once["status"] == "failed"
    assert failed_once["attempt"] == 1
    assert failed_once["error"]["type"] == "ValueError"
    assert failed_once["error"]["message"] == "boom"
    assert failed_twice["status"] == "failed"
    assert failed_twice["attempt"] == 2
    assert failed_twice["error"]["type"] == "attempts_exhausted"
    assert "boom" in failed_twice["error"]["message"]
    assert len([line for line in ledger_of(served, twice) if line["event"] == "start"]) == 2
    body = assert_problem(api.get(f"/v1/jobs/{once}/result"), 409, "job-failed")
    assert body["error"]["type"] == "ValueError"
    assert healthy["status"] == "completed"
    assert api.get("/healthz").status_code == 200


# -- bad requests ----------------------------------------------------------------------------------
def test_unknown_kind_is_404_problem(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"kind": "no_such_kind", "input": {}})

    assert_problem(response, 404, "unknown-kind")


def test_malformed_json_is_400_problem(api: httpx.Client) -> None:
    response = api.post(
        "/v1/jobs",
        content=b'{"kind": "ledger_job", "input": ',
        headers={"content-type": "application/json"},
    )

    assert_problem(response, 400, "malformed-json")


def test_bad_input_is_422_listing_every_field(api: httpx.Client) -> None:
    response = api.post(
        "/v1/jobs",
        json={"kind": "ledger_job", "input": {"steps": "many", "step_ms": -5, "color": "red"}},
    )

    body = assert_problem(response, 422, "invalid-input")
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert locations == {
        ("body", "input", "steps"),
        ("body", "input", "step_ms"),
        ("body", "input", "color"),
    }
    assert all(error["msg"] and error["type"] for error in body["errors"])


def test_bad_envelope_is_422_listing_every_field(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"input": {}, "priority": "high", "delay_seconds": -1})

    body = assert_problem(response, 422, "invalid-input")
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert {("body", "kind"), ("body", "priority"), ("body", "delay_seconds")} <= locations


def test_unknown_job_is_404_problem(api: httpx.Client) -> None:
    missing = "job_" + "0" * 32

    assert_problem(api.get(f"/v1/jobs/{missing}"), 404, "job-not-found")
    assert_problem(api.post(f"/v1/jobs/{missing}/cancel"), 404, "job-not-found")
    assert_problem(api.get(f"/v1/jobs/{missing}/result"), 404, "job-not-found")
    assert_problem(api.get(f"/v1/jobs/{missing}/events"), 404, "job-not-found")


# -- the command line ------------------------------------------------------------------------------
def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LONGJOBS), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


BAD_APPS = [
    "no_such_module:app",
    "no-colon-at-all",
    "tests.acceptance.apps.chaos_app:no_such_attribute",
    "json:loads",
]


@pytest.mark.parametrize("app_path", BAD_APPS)
def test_serve_with_a_bad_app_exits_2_with_one_line(app_path: str) -> None:
    done = run_cli("serve", app_path, "--port", str(free_port()))

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert app_path.split(":")[0] in lines[0]


def test_worker_with_a_bad_app_exits_2_with_one_line() -> None:
    done = run_cli("worker", "no_such_module:app")

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no_such_module" in lines[0]


def test_serve_refuses_a_public_address_without_the_insecure_flag() -> None:
    port = free_port()

    done = run_cli("serve", APP, "--host", "0.0.0.0", "--port", str(port))

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "0.0.0.0" in lines[0]
    assert "--insecure-open-on-public-address" in lines[0]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_sigterm_stops_serve_with_exit_0_and_its_jobs_survive(cluster: Cluster) -> None:
    server = cluster.serve()
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        job_id = submit(client, "ledger_job", {"steps": 2, "step_ms": 10})
        assert wait_terminal(client, job_id)["status"] == "completed"

    server.signal_group(signal.SIGTERM)
    exit_code = server.wait(timeout=15)

    assert exit_code == 0
    stderr = server.stderr()
    assert "Traceback" not in stderr
    assert "Application shutdown complete" in stderr
    restarted = cluster.serve()
    assert restarted.base_url is not None
    with httpx.Client(base_url=restarted.base_url, timeout=30) as client:
        assert get_job(client, job_id)["status"] == "completed"


@dataclass
class StreamReader:
    """Reads an event stream in a thread until the server ends it (cleanly or not)."""

    client: httpx.Client
    path: str
    frames: list[SSEFrame] = field(default_factory=list)
    error: str | None = None
    thread: threading.Thread | None = None

    def start(self) -> StreamReader:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            with self.client.stream("GET", self.path, timeout=60) as response:
                self.frames.extend(read_sse(response.iter_lines()))
        except httpx.HTTPError as exc:  # the server went away mid-stream
            self.error = f"{type(exc).__name__}: {exc}"

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"


def stop_serve_while_streaming(cluster: Cluster) -> tuple[LongjobsProcess, StreamReader, str]:
    """Serve, start a long job, stream its events, SIGTERM the server mid-stream."""
    server = cluster.serve()
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        job_id = submit(client, "ledger_job", {"steps": 100, "step_ms": 100})
        stream = StreamReader(client, f"/v1/jobs/{job_id}/events").start()
        wait_until(lambda: len(stream.frames) >= 5, timeout=30, what="events on the stream")
        server.signal_group(signal.SIGTERM)
        server.wait(timeout=30)
        stream.join(timeout=30)
    return server, stream, job_id


def test_sigterm_on_serve_releases_its_running_job_and_the_stream_resumes_after_restart(
    cluster: Cluster,
) -> None:
    server, stream, job_id = stop_serve_while_streaming(cluster)
    exit_code = server.popen.returncode
    events_path = f"/v1/jobs/{job_id}/events"
    frames = stream.frames

    assert exit_code == 0
    restarted = cluster.serve()
    assert restarted.base_url is not None
    seen = [int(frame.id) for frame in frames if frame.id is not None]
    with httpx.Client(base_url=restarted.base_url, timeout=30) as client:
        with client.stream(
            "GET", events_path, headers={"Last-Event-ID": str(seen[-1])}, timeout=60
        ) as response:
            rest = [frame for frame in read_sse(response.iter_lines()) if frame.data]
        job = get_job(client, job_id)
        events = stored_events(client, job_id)

    ids = seen + [int(frame.id or -1) for frame in rest]
    assert ids == list(range(len(ids))), "the resumed stream must continue without a gap"
    assert [json.loads(frame.data) for frame in rest] == events[len(seen) :]
    assert job["status"] == "completed"
    assert job["attempt"] == 1, "a released attempt is not counted"
    assert job["result"]["resumed_from"] > 0
    released = [e for e in events if (e.get("detail") or {}).get("reason") == "released"]
    assert [(e["status"], e["attempt"]) for e in released] == [("pending", 0)]


def test_sigterm_on_serve_ends_open_event_streams_cleanly(cluster: Cluster) -> None:
    server, stream, _ = stop_serve_while_streaming(cluster)

    assert "Traceback" not in server.stderr()
    assert stream.error is None
