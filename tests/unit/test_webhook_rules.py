"""The pure rules of webhook delivery: event types, the thin payload, what an attempt's answer
means for its delivery, and ``Retry-After``."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest

from longjobs.backends.outbox import Delivery, DeliveryAttempt, event_type, payload
from longjobs.webhooks.delivery import JITTER, MAX_RETRY_AFTER, decide, retry_after

SCHEDULE = [5.0, 300.0, 1800.0]


def delivery(**overrides: object) -> Delivery:
    base = {
        "id": "dlv_1",
        "event_id": "evt_1",
        "tenant": "t",
        "job_id": "job_abc",
        "endpoint_id": "we_1",
        "url": "https://example.com/hooks",
        "type": "job.completed",
        "created_at": 1_800_000_000.5,
    }
    return Delivery(**{**base, **overrides})  # type: ignore[arg-type]


def answered(code: int | None, error: str | None = None) -> DeliveryAttempt:
    return DeliveryAttempt(at=time.time(), duration_ms=12.0, status_code=code, error=error)


@pytest.mark.parametrize(
    ("kind", "status", "result", "expected"),
    [
        ("summarize", "completed", b'{"finish_reason": "length"}', "job.completed"),
        ("summarize", "failed", None, "job.failed"),
        ("summarize", "cancelled", None, "job.cancelled"),
        ("response", "completed", b'{"text": "hi", "finish_reason": "stop"}', "response.completed"),
        ("response", "completed", '{"finish_reason": "length"}', "response.incomplete"),
        ("response", "completed", b'{"finish_reason": "content_filter"}', "response.incomplete"),
        ("response", "completed", b"not json", "response.completed"),
        ("response", "completed", b"[1, 2]", "response.completed"),
        ("response", "completed", None, "response.completed"),
        ("response", "failed", None, "response.failed"),
        ("response", "cancelled", None, "response.cancelled"),
    ],
)
def test_event_types(kind: str, status: str, result: bytes | None, expected: str) -> None:
    assert event_type(kind, status, result) == expected


def test_the_payload_is_thin_and_the_same_bytes_every_time() -> None:
    body = payload(delivery())

    assert body == payload(delivery(tries=3, status="failed"))
    assert json.loads(body) == {
        "id": "evt_1",
        "object": "event",
        "type": "job.completed",
        "created_at": 1_800_000_000,
        "data": {"id": "job_abc"},
    }


def test_a_response_event_names_the_response() -> None:
    body = json.loads(payload(delivery(type="response.completed")))

    assert body["data"] == {"id": "resp_abc"}  # as OpenAI's webhooks do


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_2xx_succeeds(code: int) -> None:
    outcome = decide(delivery(), answered(code), SCHEDULE)

    assert (outcome.status, outcome.retry_in, outcome.disable_endpoint) == ("succeeded", None, None)


@pytest.mark.parametrize("code", [None, 301, 302, 307, 400, 404, 429, 500, 502, 503])
def test_anything_else_is_retried_on_the_schedule_with_jitter(code: int | None) -> None:
    for tries, step in enumerate(SCHEDULE):
        outcome = decide(
            delivery(tries=tries), answered(code, "x" if code is None else None), SCHEDULE
        )

        assert outcome.status == "pending"
        assert outcome.retry_in is not None
        assert step * (1 - JITTER) <= outcome.retry_in <= step * (1 + JITTER)


def test_jitter_spreads_the_retries() -> None:
    waits = {decide(delivery(), answered(500), SCHEDULE).retry_in for _ in range(50)}

    assert len(waits) > 40


def test_the_delivery_fails_once_the_schedule_is_used_up() -> None:
    outcome = decide(delivery(tries=len(SCHEDULE)), answered(500), SCHEDULE)

    assert (outcome.status, outcome.retry_in) == ("failed", None)


def test_410_fails_and_disables_the_endpoint_but_never_the_default_signer() -> None:
    endpoint = decide(delivery(), answered(410), SCHEDULE)
    job_url = decide(delivery(endpoint_id="default"), answered(410), SCHEDULE)

    assert endpoint.status == "failed"
    assert endpoint.disable_endpoint == "the receiver answered 410 Gone"
    assert job_url.status == "failed"
    assert job_url.disable_endpoint is None


def test_retry_after_is_a_lower_bound() -> None:
    later = decide(delivery(), answered(429), SCHEDULE, wait_at_least=120.0)
    sooner = decide(delivery(tries=2), answered(503), SCHEDULE, wait_at_least=1.0)

    assert later.retry_in == 120.0
    assert sooner.retry_in is not None
    assert sooner.retry_in >= SCHEDULE[2] * (1 - JITTER)


def test_retry_after_headers() -> None:
    now = time.time()

    assert retry_after("120", now) == 120.0
    assert retry_after(" 7 ", now) == 7.0
    assert retry_after("99999999", now) == MAX_RETRY_AFTER
    http_date = retry_after(formatdate(now + 60, usegmt=True), now)
    assert http_date is not None
    assert 58 <= http_date <= 61
    assert retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    assert retry_after(None, now) is None
    assert retry_after("soon", now) is None
    assert retry_after("-5", now) is None
