"""The client's webhook calls, with the server's answers scripted at the transport level: the
bodies and paths they send, and which failures they retry (a call that must not be made twice
is retried only when the server cannot have acted on it)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from longjobs.client import APIError, AsyncClient, ConnectionFailed, WebhookResource
from tests.unit.test_client_retries import client_for, problem, scripted

ENDPOINT = {
    "id": "we_1",
    "object": "webhook_endpoint",
    "url": "https://example.com/hook",
    "event_types": [],
    "status": "enabled",
    "created_at": "2026-01-01T00:00:00Z",
    "secret": "whsec_x",
}
DELIVERY = {
    "id": "dlv_1",
    "object": "webhook_delivery",
    "event_id": "evt_1",
    "type": "job.completed",
    "endpoint_id": "default",
    "url": "https://example.com/hook",
    "status": "pending",
    "created_at": "2026-01-01T00:00:00Z",
    "attempts": [],
}


async def test_create_sends_only_what_is_given() -> None:
    handler, seen = scripted(httpx.Response(201, json=ENDPOINT), httpx.Response(201, json=ENDPOINT))
    async with client_for(handler) as client:
        created = await client.create_webhook("https://example.com/hook")
        await client.create_webhook(
            "https://example.com/hook", event_types=("job.failed",), description="d"
        )
    assert isinstance(created, WebhookResource)
    assert created.secret == "whsec_x"
    assert [json.loads(r.content) for r in seen] == [
        {"url": "https://example.com/hook"},
        {"url": "https://example.com/hook", "event_types": ["job.failed"], "description": "d"},
    ]


async def test_update_sends_only_what_changes() -> None:
    handler, seen = scripted(httpx.Response(200, json=ENDPOINT))
    async with client_for(handler) as client:
        await client.update_webhook("we_1", event_types=[], enabled=False)
    assert (seen[0].method, seen[0].url.path) == ("PATCH", "/v1/webhooks/we_1")
    assert json.loads(seen[0].content) == {"event_types": [], "enabled": False}


async def test_submit_sends_the_webhook_url() -> None:
    job = {
        "id": "job_1",
        "kind": "k",
        "status": "pending",
        "created_at": "2026-01-01T00:00:00Z",
        "webhook": {"url": "https://example.com/hook"},
        "links": {"self": "s", "events": "e", "result": "r", "cancel": "c"},
    }
    handler, seen = scripted(httpx.Response(202, json=job))
    async with client_for(handler) as client:
        submitted = await client.submit("k", None, webhook_url="https://example.com/hook")
    assert json.loads(seen[0].content)["webhook"] == {"url": "https://example.com/hook"}
    assert submitted.webhook is not None
    assert submitted.webhook.url == "https://example.com/hook"


async def test_ids_are_escaped_in_paths() -> None:
    handler, seen = scripted(httpx.Response(202, json=DELIVERY), httpx.Response(200, json=ENDPOINT))
    async with client_for(handler) as client:
        await client.replay_delivery("job/1", "dlv?1")
        await client.get_webhook("../default")
    assert seen[0].url.raw_path == b"/v1/jobs/job%2F1/deliveries/dlv%3F1/replay"
    assert seen[1].url.raw_path == b"/v1/webhooks/..%2Fdefault"


ONCE_ONLY: dict[str, Callable[[AsyncClient], Awaitable[Any]]] = {
    "create": lambda client: client.create_webhook("https://example.com/hook"),
    "rotate": lambda client: client.rotate_webhook_secret("we_1"),
    "rotate_default": lambda client: client.rotate_default_webhook_secret(),
}


@pytest.mark.parametrize("call", ONCE_ONLY.values(), ids=ONCE_ONLY.keys())
async def test_calls_not_to_be_made_twice_are_not_retried_after_the_request_left(
    call: Callable[[AsyncClient], Awaitable[Any]],
) -> None:
    handler, seen = scripted(httpx.ReadTimeout("no answer"))
    async with client_for(handler) as client:
        with pytest.raises(ConnectionFailed, match="may have been done"):
            await call(client)
    assert len(seen) == 1

    handler, seen = scripted(problem(502, "bad-gateway"))
    async with client_for(handler) as client:
        with pytest.raises(APIError):
            await client.create_webhook("https://example.com/hook")
    assert len(seen) == 1


async def test_they_are_retried_when_the_server_cannot_have_acted() -> None:
    handler, seen = scripted(
        httpx.ConnectError("refused"),
        problem(429, "too-many-requests"),
        problem(503, "storage-unavailable"),
        httpx.Response(201, json=ENDPOINT),
    )
    async with client_for(handler) as client:
        created = await client.create_webhook("https://example.com/hook")
    assert created.id == "we_1"
    assert len(seen) == 4


async def test_repeatable_calls_are_retried_after_a_lost_answer() -> None:
    handler, seen = scripted(
        httpx.ReadError("reset"),
        problem(502, "bad-gateway"),
        httpx.Response(200, json={"object": "list", "data": [ENDPOINT]}),
    )
    async with client_for(handler) as client:
        assert [e.id for e in await client.list_webhooks()] == ["we_1"]
    assert len(seen) == 3

    handler, seen = scripted(httpx.ReadError("reset"), problem(404, "webhook-not-found"))
    async with client_for(handler) as client:
        await client.delete_webhook("we_1")  # the first DELETE removed it
    assert len(seen) == 2
