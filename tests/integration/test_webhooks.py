"""Webhooks through the in-process API and the dispatcher: the SSRF matrix of RELIABILITY S6 at
registration (``POST /v1/webhooks`` and a job's ``webhook.url``) and at delivery, names resolved
by a fake resolver so that nothing outside loopback is ever dialled; tenants kept apart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from longjobs.backends.outbox import Delivery
from longjobs.backends.sqlite import SQLiteBackend
from longjobs.settings import Settings
from longjobs.webhooks.delivery import Dispatcher
from tests.integration.http_harness import Harness, open_harness
from tests.unit.test_ssrf import ACCEPTED, REFUSED, fake_resolver


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with open_harness(tmp_path) as made:
        made.app.webhook_resolver = fake_resolver
        yield made


@pytest.mark.parametrize("url", REFUSED)
async def test_refused_destinations_are_refused_at_registration(harness: Harness, url: str) -> None:
    endpoint = await harness.client.post("/v1/webhooks", json={"url": url})
    job = await harness.client.post(
        "/v1/jobs", json={"kind": "echo", "input": {"text": "hi"}, "webhook": {"url": url}}
    )

    assert endpoint.status_code == 422, endpoint.text
    assert endpoint.json()["errors"][0]["loc"] == ["body", "url"]
    assert endpoint.json()["errors"][0]["type"] == "unsafe_destination"
    assert job.status_code == 422, job.text
    assert job.json()["errors"][0]["loc"] == ["body", "webhook", "url"]
    assert (await harness.client.get("/v1/webhooks")).json()["data"] == []
    assert (await harness.client.get("/v1/jobs")).json()["data"] == []


@pytest.mark.parametrize(("url", "address"), ACCEPTED)
async def test_public_destinations_are_accepted(harness: Harness, url: str, address: str) -> None:
    answer = await harness.client.post("/v1/webhooks", json={"url": url})

    assert answer.status_code == 201, answer.text
    assert answer.json()["url"] == url
    assert answer.headers["location"] == f"/v1/webhooks/{answer.json()['id']}"


async def test_a_name_that_rebinds_after_registration_is_refused_at_delivery(
    tmp_path: Path,
) -> None:
    answers = {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]}

    async def rebinding(host: str, port: int) -> list[str]:
        return answers[host].pop(0)

    async with open_harness(tmp_path) as harness:
        harness.app.webhook_resolver = rebinding
        job = await harness.submit(webhook={"url": "http://rebind.example/hook"})
        dispatcher = Dispatcher(
            harness.app.backend,
            Settings(webhook_retry_schedule=[60.0]),
            owner="test",
            resolver=rebinding,
        )
        await harness.run(job["id"], {"ok": True})
        (delivery,) = await harness.app.backend.claim_deliveries("test", 10, 30.0)

        outcome = await dispatcher.attempt(delivery)
        await dispatcher.client.aclose()

    assert outcome.status == "pending"  # retried later: names may come back public
    assert outcome.attempt is not None
    assert outcome.attempt.status_code is None
    assert outcome.attempt.error == "refused: rebind.example resolves to a non-public address"


async def test_an_unexpected_error_is_a_failed_attempt_not_a_lost_one(tmp_path: Path) -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver bug")

    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'd.db'}", Settings())
    dispatcher = Dispatcher(
        backend, Settings(webhook_retry_schedule=[60.0]), owner="test", resolver=broken
    )
    delivery = Delivery(
        id="dlv_x",
        event_id="evt_x",
        tenant="t",
        job_id="job_x",
        endpoint_id="default",
        url="https://example.com/hook",
        type="job.completed",
        created_at=time.time(),
        secrets=("whsec_" + "A" * 43 + "=",),
    )

    outcome = await dispatcher.attempt(delivery)
    await dispatcher.client.aclose()

    assert outcome.status == "pending"
    assert outcome.attempt is not None
    assert outcome.attempt.error == "RuntimeError"  # its text may hold anything: not kept


async def test_a_delivery_to_a_gone_endpoint_fails_without_a_request(tmp_path: Path) -> None:
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'd.db'}", Settings())
    dispatcher = Dispatcher(backend, Settings(), owner="test", resolver=fake_resolver)
    gone = Delivery(
        id="dlv_x",
        event_id="evt_x",
        tenant="t",
        job_id="job_x",
        endpoint_id="we_x",
        url="",
        type="job.completed",
        created_at=time.time(),
        blocked="the endpoint was deleted",
    )

    outcome = await dispatcher.attempt(gone)
    await dispatcher.client.aclose()

    assert outcome.status == "failed"
    assert outcome.attempt is not None
    assert outcome.attempt.error == "the endpoint was deleted"


async def test_tenants_see_only_their_own_endpoints_and_deliveries(tmp_path: Path) -> None:
    async with open_harness(tmp_path) as harness:
        harness.app.webhook_resolver = fake_resolver
        keys = {t: (await harness.app.create_api_key(t))[1] for t in ("t1", "t2")}

        def auth(tenant: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[tenant]}"}

        made = await harness.client.post(
            "/v1/webhooks", json={"url": "https://example.com/hooks"}, headers=auth("t1")
        )
        endpoint_id = made.json()["id"]
        job = await harness.client.post(
            "/v1/jobs",
            json={"kind": "echo", "input": {"text": "hi"}},
            headers=auth("t1"),
        )
        job_id = job.json()["id"]
        other = auth("t2")
        listed = await harness.client.get("/v1/webhooks", headers=other)
        shown = await harness.client.get(f"/v1/webhooks/{endpoint_id}", headers=other)
        patched = await harness.client.patch(
            f"/v1/webhooks/{endpoint_id}", json={"enabled": False}, headers=other
        )
        rotated = await harness.client.post(
            f"/v1/webhooks/{endpoint_id}/rotate-secret", headers=other
        )
        deleted = await harness.client.delete(f"/v1/webhooks/{endpoint_id}", headers=other)
        deliveries = await harness.client.get(f"/v1/jobs/{job_id}/deliveries", headers=other)
        replayed = await harness.client.post(
            f"/v1/jobs/{job_id}/deliveries/dlv_1/replay", headers=other
        )
        own = await harness.client.get(f"/v1/webhooks/{endpoint_id}", headers=auth("t1"))
        secrets = [
            (await harness.client.get("/v1/webhooks/default/secret", headers=auth(t))).json()
            for t in ("t1", "t2")
        ]

    assert listed.json()["data"] == []
    assert [shown.status_code, patched.status_code, rotated.status_code] == [404, 404, 404]
    assert shown.json()["type"] == "/problems/webhook-not-found"
    assert [deleted.status_code, deliveries.status_code, replayed.status_code] == [404] * 3
    assert deliveries.json()["type"] == "/problems/job-not-found"
    assert own.status_code == 200
    assert own.json()["status"] == "enabled"
    assert secrets[0]["secret"] != secrets[1]["secret"]


async def test_the_default_signer_is_not_an_endpoint(harness: Harness) -> None:
    secret = (await harness.client.get("/v1/webhooks/default/secret")).json()["secret"]
    again = (await harness.client.get("/v1/webhooks/default/secret")).json()["secret"]
    rotated = (await harness.client.post("/v1/webhooks/default/secret/rotate")).json()["secret"]

    assert secret == again
    assert secret.startswith("whsec_")
    assert rotated != secret
    assert (await harness.client.get("/v1/webhooks/default")).status_code == 404
    assert (await harness.client.delete("/v1/webhooks/default")).status_code == 404
    assert (await harness.client.get("/v1/webhooks")).json()["data"] == []
    signer = await harness.app.backend.get_webhook("default", "default")
    assert signer is not None
    assert signer.signing_secrets(time.time()) == (rotated, secret)  # the overlap


async def test_endpoint_limits_and_bad_bodies_are_problems(harness: Harness) -> None:
    bad_type = await harness.client.post(
        "/v1/webhooks", json={"url": "https://example.com/hooks", "event_types": ["job.done"]}
    )
    extra = await harness.client.post(
        "/v1/webhooks", json={"url": "https://example.com/hooks", "secret": "whsec_mine"}
    )
    made = [
        await harness.client.post("/v1/webhooks", json={"url": "https://example.com/hooks"})
        for _ in range(21)
    ]

    assert bad_type.status_code == 422
    assert bad_type.json()["errors"][0]["loc"][:2] == ["body", "event_types"]
    assert extra.status_code == 422
    assert [m.status_code for m in made] == [201] * 20 + [409]
    assert made[-1].json()["type"] == "/problems/too-many-webhooks"
