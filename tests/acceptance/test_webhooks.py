"""Webhooks end to end: a real ``longjobs serve`` on SQLite and PostgreSQL sends signed events to
receivers on loopback (allow-listed) that answer as badly as real ones do.

The signatures are checked by independent implementations: the ``standardwebhooks`` package
and the ``openai`` SDK's ``webhooks.unwrap``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI
from standardwebhooks import Webhook
from werkzeug.wrappers import Response

from tests.acceptance.harness import Cluster, submit, wait_terminal, wait_until
from tests.acceptance.receiver import RECEIVER_ENV, Receiver

SCHEDULE = [0.3, 0.3, 0.3, 0.3, 0.3]
SERVE_ENV = {
    **RECEIVER_ENV,
    "LONGJOBS_WEBHOOK_RETRY_SCHEDULE": json.dumps(SCHEDULE),
    "LONGJOBS_WEBHOOK_TIMEOUT": "1.5",
    "LONGJOBS_WEBHOOK_POLL_INTERVAL": "0.1",
}


def default_secret(api: httpx.Client) -> str:
    answer = api.get("/v1/webhooks/default/secret")
    assert answer.status_code == 200, answer.text
    secret: str = answer.json()["secret"]
    return secret


def deliveries(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    answer = api.get(f"/v1/jobs/{job_id}/deliveries")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


def settled_deliveries(api: httpx.Client, job_id: str, count: int = 1) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]]:
        found = deliveries(api, job_id)
        done = [d for d in found if d["status"] != "pending"]
        return found if len(found) >= count and len(done) == len(found) else []

    return wait_until(settled, timeout=30.0, what="deliveries settled")


def quick_job(api: httpx.Client, **options: Any) -> str:
    return submit(api, "chatty", {"lines": 1, "interval_ms": 0}, **options)


# -- signing and the event ------------------------------------------------------------------------


def test_a_jobs_webhook_is_signed_and_verified_by_independent_libraries(
    api: httpx.Client, receiver: Receiver
) -> None:
    secret = default_secret(api)
    job_id = quick_job(api, webhook={"url": receiver.url()})
    assert api.get(f"/v1/jobs/{job_id}").json()["webhook"] == {"url": receiver.url()}

    (got,) = receiver.wait_for(1)

    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "job.completed"
    assert event["object"] == "event"
    assert event["data"] == {"id": job_id}
    assert event["id"] == got.headers["Webhook-Id"]
    assert event["id"].startswith("evt_")
    assert "." not in event["id"]
    assert abs(int(got.headers["Webhook-Timestamp"]) - time.time()) < 60
    assert got.headers["Content-Type"] == "application/json"
    unwrapped = OpenAI(api_key="unused").webhooks.unwrap(got.body, got.headers, secret=secret)
    assert unwrapped.id == event["id"]
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(secret).verify(got.body.replace(b"completed", b"cancelled"), got.headers)
    (delivery,) = settled_deliveries(api, job_id)
    assert delivery["status"] == "succeeded"
    assert delivery["event_id"] == event["id"]
    assert delivery["endpoint_id"] == "default"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert "response" not in delivery["attempts"][0]  # the receiver's answer is not echoed


def test_every_terminal_status_is_an_event(api: httpx.Client, receiver: Receiver) -> None:
    failed = submit(api, "crash", None, webhook={"url": receiver.url()}, max_attempts=1)
    cancelled = submit(
        api, "sleepy", {"seconds": 60}, webhook={"url": receiver.url()}, delay_seconds=60
    )
    assert api.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200

    got = receiver.wait_for(2)

    types = {json.loads(r.body)["data"]["id"]: json.loads(r.body)["type"] for r in got}
    assert types == {failed: "job.failed", cancelled: "job.cancelled"}


# -- retries --------------------------------------------------------------------------------------


def late() -> Response:
    time.sleep(3.0)
    return Response("late", 200)


def test_a_misbehaving_receiver_is_retried_until_it_answers_2xx(
    api: httpx.Client, receiver: Receiver
) -> None:
    receiver.script = [
        lambda: Response("boom", 500),
        lambda: Response("slow down", 429, headers={"Retry-After": "2"}),
        lambda: Response("", 302, headers={"Location": receiver.url("/moved")}),
        late,  # past the 1.5 s timeout
        lambda: Response("x" * 100_000, 200),
    ]
    job_id = quick_job(api, webhook={"url": receiver.url()})

    got = receiver.wait_for(5, timeout=40.0)
    (delivery,) = settled_deliveries(api, job_id)

    assert [r.path for r in got] == ["/hook"] * 5  # the redirect was not followed
    assert len({r.headers["Webhook-Id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # the same bytes every time
    assert got[2].at - got[1].at >= 2.0  # Retry-After honoured
    assert delivery["status"] == "succeeded"
    codes = [a["status_code"] for a in delivery["attempts"]]
    assert codes == [500, 429, 302, None, 200]
    assert "1.5 s" in delivery["attempts"][3]["error"]
    assert all(a["duration_ms"] < 60_000 for a in delivery["attempts"])
    metrics = api.get("/metrics").text
    counts = {
        result: float(line.rsplit(" ", 1)[1])
        for result in ("retried", "succeeded")
        for line in metrics.splitlines()
        if line.startswith(f'longjobs_webhook_attempts_total{{result="{result}"}}')
    }
    assert counts["retried"] >= 4
    assert counts["succeeded"] >= 1


def test_a_delivery_fails_once_the_schedule_is_used_up_and_can_be_replayed(
    api: httpx.Client, receiver: Receiver
) -> None:
    receiver.script = [lambda: Response("down", 503)] * (len(SCHEDULE) + 1)
    job_id = quick_job(api, webhook={"url": receiver.url()})

    (delivery,) = settled_deliveries(api, job_id)
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == len(SCHEDULE) + 1
    assert len(receiver.received) == len(SCHEDULE) + 1

    replayed = api.post(f"/v1/jobs/{job_id}/deliveries/{delivery['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["status"] == "pending"
    got = receiver.wait_for(len(SCHEDULE) + 2)
    assert got[-1].headers["Webhook-Id"] == delivery["event_id"]
    (again,) = settled_deliveries(api, job_id)
    assert again["status"] == "succeeded"
    assert api.post(f"/v1/jobs/{job_id}/deliveries/dlv_nope/replay").status_code == 404


# -- tenant endpoints -----------------------------------------------------------------------------


@pytest.fixture
def endpoint_of(api: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    made: list[str] = []

    def register(url: str, **fields: Any) -> dict[str, Any]:
        answer = api.post("/v1/webhooks", json={"url": url, **fields})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
        created: dict[str, Any] = answer.json()
        return created

    yield register
    for endpoint_id in made:
        api.delete(f"/v1/webhooks/{endpoint_id}")


def test_endpoints_are_managed_and_filter_event_types(
    api: httpx.Client, receiver: Receiver, endpoint_of: Callable[..., dict[str, Any]]
) -> None:
    endpoint = endpoint_of(receiver.url(), event_types=["job.failed"], description="failures")
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["status"] == "enabled"
    shown = api.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["secret"] is None  # shown once
    assert [e["id"] for e in api.get("/v1/webhooks").json()["data"]] == [endpoint["id"]]

    quick_job(api)
    failed = submit(api, "crash", None, max_attempts=1)
    wait_terminal(api, failed)

    (got,) = receiver.wait_for(1)
    event = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert (event["type"], event["data"]["id"]) == ("job.failed", failed)
    (delivery,) = settled_deliveries(api, failed)
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["url"] == receiver.url()

    assert api.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
    assert api.get(f"/v1/webhooks/{endpoint['id']}").status_code == 404
    assert api.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 404


def test_410_disables_the_endpoint_until_it_is_enabled_again(
    api: httpx.Client, receiver: Receiver, endpoint_of: Callable[..., dict[str, Any]]
) -> None:
    receiver.script = [lambda: Response("gone", 410)]
    endpoint = endpoint_of(receiver.url())
    first = quick_job(api)
    (delivery,) = settled_deliveries(api, first)
    assert delivery["status"] == "failed"
    disabled = api.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert disabled["status"] == "disabled"
    assert "410" in disabled["disabled_reason"]

    second = quick_job(api)
    wait_terminal(api, second)
    time.sleep(0.5)  # the outbox is fanned out within a poll interval
    assert deliveries(api, second) == []
    assert len(receiver.received) == 1

    blocked = api.post(f"/v1/jobs/{first}/deliveries/{delivery['id']}/replay")
    assert blocked.status_code == 409, blocked.text
    assert blocked.json()["type"] == "/problems/delivery-blocked"

    enabled = api.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": True})
    assert enabled.json()["status"] == "enabled"
    third = quick_job(api)
    assert settled_deliveries(api, third)[0]["status"] == "succeeded"


def test_a_rotated_secret_signs_with_both_keys(
    api: httpx.Client, receiver: Receiver, endpoint_of: Callable[..., dict[str, Any]]
) -> None:
    endpoint = endpoint_of(receiver.url())
    rotated = api.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != endpoint["secret"]

    quick_job(api)
    (got,) = receiver.wait_for(1)

    assert len(got.headers["Webhook-Signature"].split(" ")) == 2
    Webhook(endpoint["secret"]).verify(got.body, got.headers)
    Webhook(new_secret).verify(got.body, got.headers)


# -- SSRF -----------------------------------------------------------------------------------------

REFUSED = [
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:10.0.0.1]/hook",
    "http://localhost:8080/hook",
    "http://0.0.0.0/hook",
    "file:///etc/passwd",
    "http://user:pass@example.com/hook",
    "http://2130706433/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_destinations_are_refused_at_registration(api: httpx.Client, url: str) -> None:
    answer = api.post("/v1/webhooks", json={"url": url})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"] == ["body", "url"]

    submitted = api.post(
        "/v1/jobs",
        json={"kind": "chatty", "input": {"lines": 1, "interval_ms": 0}, "webhook": {"url": url}},
    )
    assert submitted.status_code == 422, submitted.text
    assert submitted.json()["errors"][0]["loc"] == ["body", "webhook", "url"]


# -- the outbox survives a crash ------------------------------------------------------------------


def test_a_worker_killed_between_commit_and_send_still_delivers(
    cluster: Cluster, receiver: Receiver
) -> None:
    serve = cluster.serve(worker=False, env=SERVE_ENV)
    silent = cluster.worker(env={**SERVE_ENV, "LONGJOBS_WEBHOOK_DELIVERY": "false"})
    with httpx.Client(base_url=serve.base_url or "", timeout=30.0) as api:
        job_id = quick_job(api, webhook={"url": receiver.url()})
        assert wait_terminal(api, job_id)["status"] == "completed"
        silent.kill()  # the job is done, its webhook not sent
        time.sleep(0.5)
        assert receiver.received == []
        assert deliveries(api, job_id) == []  # still in the outbox

        cluster.worker(env=SERVE_ENV)
        (got,) = receiver.wait_for(1)
        assert json.loads(got.body)["data"]["id"] == job_id
        assert settled_deliveries(api, job_id)[0]["status"] == "succeeded"
