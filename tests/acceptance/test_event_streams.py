"""Event streams over real sockets: cut, killed and resumed exactly once; read by httpx-sse.

RELIABILITY F5/R5: a client reads a job's SSE stream; its connection is reset mid-stream, then
the server process is SIGKILLed mid-stream and started again on the same database. Resuming
with ``Last-Event-ID`` or ``?after=N`` after the last frame it got, the client ends up with every
event exactly once, in order, sequence numbers gap-free from 0, ending with the terminal status,
without deduplicating anything itself.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from httpx_sse import aconnect_sse, connect_sse

from tests.acceptance.harness import (
    Cluster,
    LongjobsProcess,
    SSEFrame,
    read_sse,
    stored_events,
    submit,
    wait_terminal,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

LINES = 200
"""Log lines of the streamed job: one event each, plus its status events."""

INTERVAL_MS = 30
CUT_AT = 20
"""Frames the first connection reads before it is reset."""

KILL_AT = 60
"""Frames read in all when the server is SIGKILLed."""


@dataclass(frozen=True)
class Fault:
    """How the job survives the server's SIGKILL, and how the client resumes each time."""

    worker_apart: bool
    """True: a ``longjobs worker`` process runs the job and goes on while the server is down.
    False: the server's own worker dies with it and the restarted server takes the job up again
    once its lease has expired, from its last checkpoint."""
    resume_after_cut: str
    resume_after_restart: str

    def serve(self, cluster: Cluster) -> LongjobsProcess:
        return cluster.serve(worker=not self.worker_apart)


FAULTS = {
    "worker-process-goes-on": Fault(True, "Last-Event-ID", "after"),
    "job-rescued-after-its-lease": Fault(False, "after", "Last-Event-ID"),
}


def _cursor(how: str, frames: list[SSEFrame]) -> dict[str, Any]:
    """``client.stream`` options resuming after the last of ``frames``."""
    assert frames[-1].id is not None
    if how == "Last-Event-ID":
        return {"headers": {"Last-Event-ID": frames[-1].id}}
    return {"params": {"after": frames[-1].id}}


def _data_frames(lines: Iterator[str]) -> Iterator[SSEFrame]:
    return (frame for frame in read_sse(lines) if frame.data)


def _read_then_reset(base_url: str, path: str, count: int) -> list[SSEFrame]:
    """``count`` frames read with the standard library's HTTP client, then the connection is
    reset (RST: SO_LINGER 0), as when a client crashes or its network drops."""
    address = urlsplit(base_url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        assert response.status == 200
        lines = (line.decode().rstrip("\r\n") for line in iter(response.readline, b""))
        frames = list(itertools.islice(_data_frames(lines), count))
        assert connection.sock is not None
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        response.close()
    finally:
        connection.close()
    return frames


def _read_until_killed(
    server: LongjobsProcess, path: str, cursor: dict[str, Any], kill_at: int
) -> tuple[list[SSEFrame], str | None]:
    """Frames read until the stream breaks, SIGKILLing the server once ``kill_at`` were read;
    also how the stream ended (None: the server ended it cleanly)."""
    frames: list[SSEFrame] = []
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        try:
            with client.stream("GET", path, **cursor) as response:
                assert response.status_code == 200
                for frame in _data_frames(response.iter_lines()):
                    frames.append(frame)
                    if len(frames) == kill_at:
                        server.kill()
        except httpx.HTTPError as exc:
            return frames, type(exc).__name__
    return frames, None


def _read_to_the_end(base_url: str, path: str, cursor: dict[str, Any]) -> list[SSEFrame]:
    with (
        httpx.Client(base_url=base_url, timeout=60) as client,
        client.stream("GET", path, **cursor) as response,
    ):
        assert response.status_code == 200
        return list(_data_frames(response.iter_lines()))


@pytest.mark.parametrize("fault", FAULTS)
def test_a_stream_cut_then_killed_resumes_with_every_event_exactly_once(
    cluster: Cluster, fault: str
) -> None:
    how = FAULTS[fault]
    server = how.serve(cluster)
    if how.worker_apart:
        cluster.worker()
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        job_id = submit(client, "chatty", {"lines": LINES, "interval_ms": INTERVAL_MS})
    path = f"/v1/jobs/{job_id}/events"

    cut = _read_then_reset(server.base_url, path, CUT_AT)
    killed, broken_by = _read_until_killed(
        server, path, _cursor(how.resume_after_cut, cut), KILL_AT - len(cut)
    )
    restarted = how.serve(cluster)
    assert restarted.base_url is not None
    rest = _read_to_the_end(restarted.base_url, path, _cursor(how.resume_after_restart, killed))

    frames = cut + killed + rest
    events = [json.loads(frame.data) for frame in frames]
    ids = [int(frame.id or -1) for frame in frames]
    assert broken_by is not None, "the server must be killed mid-stream, not end it"
    assert len(cut) == CUT_AT
    assert len(cut) + len(killed) >= KILL_AT
    assert rest
    assert ids == list(range(len(frames))), "every event exactly once, in order, from 0"
    assert [event["sequence_number"] for event in events] == ids
    assert [frame.event for frame in frames] == [event["type"] for event in events]
    assert {event["job_id"] for event in events} == {job_id}
    lines = [event["number"] for event in events if event["type"] == "log"]
    assert lines == list(range(LINES)), "each line of the handler exactly once"
    terminal = [e for e in events if e["type"] == "status" and e["status"] == "completed"]
    assert terminal == [events[-1]], "the stream ends with the one terminal status event"
    with httpx.Client(base_url=restarted.base_url, timeout=30) as client:
        assert stored_events(client, job_id) == events
        job = wait_terminal(client, job_id)
    assert job["attempt"] == (1 if how.worker_apart else 2)
    assert (job["result"]["resumed_from"] > 0) == (not how.worker_apart)
    assert "Traceback" not in server.stderr()


# -- httpx-sse, the client most Python applications use -----------------------------------------
def test_httpx_sse_reads_a_job_stream_as_it_is(api: httpx.Client) -> None:
    job_id = submit(api, "chatty", {"lines": 5, "interval_ms": 20})
    path = f"/v1/jobs/{job_id}/events"

    with connect_sse(api, "GET", path) as source:
        content_type = source.response.headers["content-type"]
        first, *received = list(source.iter_sse())
    stored = stored_events(api, job_id)

    assert content_type.startswith("text/event-stream")
    assert first.retry is not None
    assert first.retry > 0
    assert first.data == ""
    assert [sse.json() for sse in received] == stored
    assert [sse.id for sse in received] == [str(e["sequence_number"]) for e in stored]
    assert [sse.event for sse in received] == [e["type"] for e in stored]
    assert [e["sequence_number"] for e in stored] == list(range(len(stored)))
    assert {sse.event for sse in received} <= {"status", "progress", "log", "output", "usage"}
    assert (stored[-1]["type"], stored[-1]["status"]) == ("status", "completed")
    assert [e["message"] for e in stored if e["type"] == "log"] == [f"line {n}" for n in range(5)]


async def test_httpx_sse_resumes_after_the_last_event_it_saw(api: httpx.Client) -> None:
    job_id = submit(api, "chatty", {"lines": 5, "interval_ms": 1})
    wait_terminal(api, job_id)
    stored = stored_events(api, job_id)
    path = f"/v1/jobs/{job_id}/events"

    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as client:
        async with aconnect_sse(client, "GET", path, headers={"Last-Event-ID": "3"}) as source:
            by_header = [sse.json() async for sse in source.aiter_sse() if sse.data]
        async with aconnect_sse(client, "GET", path, params={"after": "5"}) as source:
            by_query = [sse.json() async for sse in source.aiter_sse() if sse.data]

    assert by_header == stored[4:]
    assert by_query == stored[6:]
