"""A webhook receiver on loopback for the acceptance tests: scripted answers, recorded POSTs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.acceptance.harness import wait_until

RECEIVER_ENV = {"LONGJOBS_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]'}
"""What a server needs to deliver to the receiver (loopback is refused unless allowed)."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A loopback receiver: answers each POST with the next scripted answer (200 once the
    script is used up) and records what it received."""

    server: HTTPServer
    script: list[Callable[[], Response]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.received.append(
                Received(request.path, dict(request.headers), request.get_data(), time.time())
            )
            answer = self.script.pop(0) if self.script else (lambda: Response("ok", 200))
        return answer()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        wait_until(lambda: len(self.received) >= count, timeout=timeout, what=f"{count} POSTs")
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    made = Receiver(server)
    server.expect_request("/hook").respond_with_handler(made.handle)
    server.expect_request("/moved").respond_with_handler(made.handle)
    try:
        yield made
    finally:
        server.clear()
        server.stop()
