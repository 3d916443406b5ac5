"""The example's model path: the real ``openai`` SDK against a small OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from examples.docs import DocumentIn, analyze_document, sample_document
from examples.upstream import DEFAULT_MODEL, Upstream
from longjobs import Job, PermanentError, Status
from longjobs.context import Context

STREAMED = ["The orchard ", "kept water ", "in the soil. ", "Mulch helped."]


@dataclass
class FakeModel:
    """What the fake server answers, and what it saw."""

    status: int = 200
    hold_open: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)


class _ChatCompletions(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        model = self.server.model
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model.requests.append({"path": self.path, "body": body})
        if model.status != 200:
            self._send_json(model.status, {"error": {"message": "no", "type": "invalid_key"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for text in STREAMED:
                self._send_chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
            while model.hold_open:  # a long generation: until the client hangs up
                self._send_chunk([{"index": 0, "delta": {}, "finish_reason": None}])
                time.sleep(0.05)
            usage = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
            self._send_chunk([], usage=usage)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            model.disconnected.set()

    def _send_chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> None:
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-model",
            "choices": choices,
            "usage": usage,
        }
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    model: FakeModel


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    server = _Server(("127.0.0.1", 0), _ChatCompletions)
    server.daemon_threads = True
    server.model = FakeModel()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("LONGJOBS_UPSTREAM_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("LONGJOBS_EXAMPLE_MODEL", "fake-model")
    yield server.model
    server.model.hold_open = False
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def new_context() -> Context:
    job = Job(
        id="job_x",
        tenant="default",
        kind="analyze_document",
        status=Status.RUNNING,
        attempt=1,
        created_at=datetime.now(UTC),
    )
    return Context(job)


def test_the_upstream_comes_from_the_environment() -> None:
    assert Upstream.from_env({}) is None
    assert Upstream.from_env({"OPENAI_API_KEY": "sk-1"}) == Upstream(None, "sk-1", DEFAULT_MODEL)
    local = {"OPENAI_BASE_URL": "http://localhost:11434/v1", "LONGJOBS_EXAMPLE_MODEL": "llama3"}
    assert Upstream.from_env(local) == Upstream("http://localhost:11434/v1", "not-needed", "llama3")
    both = {"LONGJOBS_UPSTREAM_BASE_URL": "http://a/v1", "OPENAI_BASE_URL": "http://b/v1"}
    upstream = Upstream.from_env(both)
    assert upstream is not None
    assert upstream.base_url == "http://a/v1"


async def test_the_model_writes_the_summary_as_a_stream(fake_model: FakeModel) -> None:
    ctx = new_context()
    doc = DocumentIn(text=sample_document(), title="Orchard", summary_sentences=2)

    result = await analyze_document(ctx, doc)

    assert result.model == "fake-model"
    assert result.summary == ["The orchard kept water in the soil.", "Mulch helped."]
    assert result.words == 821
    update = ctx.take_update()
    assert update is not None
    outputs = [data["delta"] for kind, data in update.events if kind == "output"]
    assert outputs == ["".join(STREAMED)]  # deltas are joined between two flushes
    assert (update.input_tokens, update.output_tokens) == (42, 7)
    [request] = fake_model.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "fake-model"
    assert request["body"]["stream"] is True
    assert request["body"]["stream_options"] == {"include_usage": True}
    prompt = request["body"]["messages"][1]["content"]
    assert "Title: Orchard" in prompt
    assert "at most 2 sentences" in prompt


async def test_a_refused_request_fails_the_job_for_good(fake_model: FakeModel) -> None:
    fake_model.status = 401
    with pytest.raises(PermanentError, match="answered 401") as caught:
        await analyze_document(new_context(), DocumentIn(text=sample_document()))
    assert caught.value.type == "upstream_error"


async def test_cancelling_closes_the_upstream_stream(fake_model: FakeModel) -> None:
    fake_model.hold_open = True
    ctx = new_context()
    task = asyncio.create_task(analyze_document(ctx, DocumentIn(text=sample_document())))
    streamed = ""
    while streamed != "".join(STREAMED):
        await asyncio.sleep(0.01)
        streamed += "".join(_output_deltas(ctx))

    for callback in ctx.request_stop("cancel requested"):  # what the worker does on cancel
        result = callback()
        if inspect.isawaitable(result):
            await result
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake_model.disconnected.wait, 5)


def _output_deltas(ctx: Context) -> list[str]:
    update = ctx.take_update()
    events = update.events if update is not None else []
    return [data["delta"] for kind, data in events if kind == "output"]
