"""``/v1/jobs/{id}/ws`` against a real server with a real WebSocket client."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.harness import LONGJOBS, ROOT, Cluster, submit, wait_until

pytestmark = pytest.mark.acceptance


def ws_url(base_url: str | None, path: str) -> str:
    assert base_url is not None
    return base_url.replace("http://", "ws://") + path


def frames_until_close(socket: ClientConnection) -> list[dict[str, Any]]:
    frames = []
    try:
        while True:
            frames.append(json.loads(socket.recv(timeout=30)))
    except ConnectionClosed:
        return frames


def test_the_websocket_replays_and_follows_the_log_until_the_end(cluster: Cluster) -> None:
    server = cluster.serve()
    with httpx.Client(base_url=server.base_url or "", timeout=10) as client:
        job_id = submit(client, "ledger_job", {"steps": 5, "step_ms": 40})
    with connect(ws_url(server.base_url, f"/v1/jobs/{job_id}/ws")) as socket:
        frames = frames_until_close(socket)
        code = socket.close_code
    with connect(ws_url(server.base_url, f"/v1/jobs/{job_id}/ws?after=2")) as socket:
        resumed = frames_until_close(socket)

    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    assert frames[-1]["type"] == "status"
    assert frames[-1]["status"] == "completed"
    assert {f["job_id"] for f in frames} == {job_id}
    assert code == 1000
    assert resumed == frames[3:]


def test_a_cancel_sent_over_the_websocket_stops_the_job(cluster: Cluster) -> None:
    server = cluster.serve()
    with httpx.Client(base_url=server.base_url or "", timeout=10) as client:
        job_id = submit(client, "sleepy", {"seconds": 30})
        with connect(ws_url(server.base_url, f"/v1/jobs/{job_id}/ws")) as socket:
            seen: list[dict[str, Any]] = []
            while not any(f.get("status") == "running" for f in seen):
                seen.append(json.loads(socket.recv(timeout=30)))
            socket.send(json.dumps({"type": "cancel"}))
            seen += frames_until_close(socket)
        job = client.get(f"/v1/jobs/{job_id}").json()

    statuses = [f["status"] for f in seen if f["type"] == "status"]
    assert statuses[-1] == "cancelled"
    assert job["status"] == "cancelled"


def test_the_websocket_handshake_needs_a_key_once_keys_exist(cluster: Cluster) -> None:
    server = cluster.serve()
    with httpx.Client(base_url=server.base_url or "", timeout=10) as client:
        job_id = submit(client, "ledger_job", {"steps": 1, "step_ms": 10})
    created = subprocess.run(
        [str(LONGJOBS), "keys", "create", "--tenant", "acme"],
        cwd=ROOT,
        env={"LONGJOBS_DATABASE_URL": cluster.database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    url = ws_url(server.base_url, f"/v1/jobs/{job_id}/ws")
    # A running server notices a first key made by the command within a second.
    wait_until(
        lambda: httpx.get(f"{server.base_url}/v1/jobs").status_code == 401,
        timeout=10,
        what="the server to require keys",
    )

    with pytest.raises(InvalidStatus) as refused:
        connect(url).close()
    with pytest.raises(InvalidStatus) as foreign:  # acme cannot see the default tenant's job
        connect(url, additional_headers={"Authorization": f"Bearer {created.stdout.strip()}"})

    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"].startswith("Bearer")
    assert foreign.value.response.status_code == 404


def test_a_handshake_on_a_path_without_websocket_is_a_404_problem(cluster: Cluster) -> None:
    server = cluster.serve()
    refusals = []
    for path in ["/v1/jobs/..%2F/ws", "/v1/jobs", "/no/such/socket"]:
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server.base_url, path)).close()
        refusals.append(refused.value.response)

    for response in refusals:
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/problem+json"
        assert json.loads(bytes(response.body or b""))["type"] == "/problems/not-found"


def test_event_streams_past_the_cap_are_refused_with_429(cluster: Cluster) -> None:
    server = cluster.serve(env={"LONGJOBS_MAX_STREAMS_PER_KEY": "1"})
    with httpx.Client(base_url=server.base_url or "", timeout=10) as client:
        job_id = submit(client, "sleepy", {"seconds": 30})
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: dropping it would close the stream early
            assert next(lines) == "retry: 2000"
            second = client.get(f"/v1/jobs/{job_id}/events")
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(server.base_url, f"/v1/jobs/{job_id}/ws")).close()
        client.post(f"/v1/jobs/{job_id}/cancel")
        after = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"})

    assert second.status_code == 429
    assert second.headers["retry-after"] == "5"
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "5"
    assert json.loads(bytes(refused.value.response.body or b""))["retry_after"] == 5
    assert after.status_code == 200


def test_a_client_that_never_reads_is_dropped_and_frees_its_stream(cluster: Cluster) -> None:
    env = {"LONGJOBS_MAX_STREAMS_PER_KEY": "1", "LONGJOBS_STREAM_SEND_TIMEOUT": "1"}
    server = cluster.serve(env=env)
    assert server.base_url is not None
    host, port = server.base_url.removeprefix("http://").split(":")
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        job_id = submit(client, "flood", {"megabytes": 24})
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port)))
        stuck.sendall(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # Its status line, and nothing more: a probe sent before the stream started could
        # take the only slot first.
        status_line = stuck.recv(12, socket.MSG_WAITALL)
        try:  # the stuck client holds the only stream slot until the server drops it
            held = _wait_for_stream_answer(client, job_id, lambda code: code == 429)
            freed = _wait_for_stream_answer(client, job_id, lambda code: code != 429)
        finally:
            stuck.close()
        client.post(f"/v1/jobs/{job_id}/cancel")

    assert status_line == b"HTTP/1.1 200"
    assert held == 429
    assert freed == 200  # the slot came back: the client that never read was dropped
    assert server.alive


def _wait_for_stream_answer(
    client: httpx.Client, job_id: str, wanted: Callable[[int], bool]
) -> int:
    """Open (and at once close) event streams until the status code is ``wanted``."""
    deadline = time.monotonic() + 60
    while True:
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as probe:
            code = probe.status_code  # a 200 stream is left unread and closed
        if wanted(code) or time.monotonic() > deadline:
            return code
        time.sleep(0.2)
