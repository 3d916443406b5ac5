"""Contract: the webhook outbox (endpoints, fan-out, leased deliveries), on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from longjobs.backends.base import Backend, Cancelled, Completed, Failed, Outcome
from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    MAX_KEPT_ATTEMPTS,
    Delivery,
    DeliveryAttempt,
    DeliveryOutcome,
    DeliveryStatus,
    WebhookChange,
    WebhookEndpoint,
)
from longjobs.models import Job, Status
from longjobs.webhooks.signing import new_secret
from tests.backends.contract import (
    BOOM,
    KIND,
    LEASE,
    OTHER_TENANT,
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    TENANT,
    WORKER,
    claim_one,
    complete,
    create,
    fail_for_retry,
    finish,
    get,
    start,
)

JOB_URL = "https://jobs.example.com/hook"
ENDPOINT_URL = "https://receiver.example.com/hooks"
OWNER, OTHER_OWNER = "dispatcher-1", "dispatcher-2"
RESPONSE = "response"
ENDINGS: dict[str, Outcome] = {
    "complete": Completed(b'{"text": "hi", "finish_reason": "stop"}'),
    "cut short": Completed(b'{"text": "hi", "finish_reason": "length"}'),
    "filtered": Completed(b'{"text": "", "finish_reason": "content_filter"}'),
    "cut short, big": Completed(b'{"finish_reason": "length", "t": "' + b"x" * 300_000 + b'"}'),
    "fail": Failed(BOOM),
    "cancel running: stop": Cancelled(),
    "cancel running: fail": Failed(BOOM),
    "cancel running: retry": Failed(BOOM, retry_in=0.0),
}


def endpoint(id_: str = "wh_1", tenant: str = TENANT, **overrides: Any) -> WebhookEndpoint:
    base = WebhookEndpoint(
        id=id_, tenant=tenant, url=ENDPOINT_URL, secret=new_secret(), created_at=time.time()
    )
    return dataclasses.replace(base, **overrides)


async def register(backend: Backend, id_: str = "wh_1", **overrides: Any) -> WebhookEndpoint:
    made = endpoint(id_, **overrides)
    assert await backend.create_webhook(made) == made
    return made


async def claim(backend: Backend, owner: str = OWNER, limit: int = 100) -> list[Delivery]:
    return await backend.claim_deliveries(owner, limit, LEASE)


async def claim_single(backend: Backend, owner: str = OWNER) -> Delivery:
    claimed = await claim(backend, owner)
    assert len(claimed) == 1, f"expected one delivery, got {claimed}"
    return claimed[0]


async def claimed_types(backend: Backend) -> list[tuple[str, str]]:
    return [(d.job_id, d.type) for d in await claim(backend)]


def targets(found: list[Delivery] | None) -> list[tuple[str, str]]:
    assert found is not None
    return sorted((d.endpoint_id, d.url) for d in found)


async def fan_out(backend: Backend) -> None:
    """Plan the outbox's deliveries without leasing any (a claim of none)."""
    assert await claim(backend, limit=0) == []


async def completed(backend: Backend, **overrides: Any) -> Job:
    job = await start(backend, **overrides)
    assert await complete(backend, job, {"answer": 42})
    return job


async def end(backend: Backend, how: str, kind: str = KIND) -> Job:
    """A job with a webhook URL, ended ``how`` (an ENDINGS key, "cancel pending", "expire")."""
    expire = how == "expire"  # its only attempt's lease runs out
    job = await create(backend, kind=kind, webhook_url=JOB_URL, max_attempts=1 if expire else 2)
    if how == "cancel pending":
        assert await backend.request_cancel(TENANT, job.id) is not None
        return job
    claimed = await claim_one(backend, lease=SHORT_LEASE if expire else LEASE, kinds=[kind])
    if expire:
        await asyncio.sleep(PAST_SHORT_LEASE)
        await backend.sweep()
        return job
    if how.startswith("cancel running"):
        await backend.request_cancel(TENANT, job.id)
        assert await claim(backend) == []  # asked to stop, not stopped yet
    if how == "cancel running: release":
        assert await backend.release_jobs(WORKER, [job.id]) == 1
        return job
    assert await finish(backend, claimed, ENDINGS[how])
    return job


def tried(code: int = 200) -> DeliveryAttempt:
    return DeliveryAttempt(at=time.time(), duration_ms=12.5, status_code=code, response="ok")


async def record(
    backend: Backend,
    d: Delivery,
    status: DeliveryStatus,
    attempt: DeliveryAttempt | None = None,
    owner: str = OWNER,
    **kw: Any,
) -> int:
    """Hand back the outcome of one delivery as ``owner``; how many were applied (0 or 1)."""
    return await backend.record_deliveries(owner, [DeliveryOutcome(d.id, attempt, status, **kw)])


async def webhook(backend: Backend, id_: str = "wh_1", tenant: str = TENANT) -> WebhookEndpoint:
    found = await backend.get_webhook(tenant, id_)
    assert found is not None, f"{tenant}/{id_} should exist"
    return found


async def only_delivery(backend: Backend, job_id: str) -> Delivery:
    found = await backend.list_deliveries(TENANT, job_id)
    assert found is not None
    assert len(found) == 1, f"expected one delivery, got {found}"
    return found[0]


# -- endpoints -------------------------------------------------------------------------------


async def test_endpoints_are_stored_once_per_tenant_and_listed_oldest_first(
    backend: Backend,
) -> None:
    t = time.time()
    newer = await register(backend, event_types=("job.failed",), description="ops", created_at=t)
    older = await register(backend, "wh_0", created_at=t - 1)
    theirs = await register(backend, tenant=OTHER_TENANT)  # the same id, another tenant
    await register(backend, DEFAULT_ENDPOINT, created_at=t - 2)  # never listed

    again = await backend.create_webhook(endpoint(url="https://other.example.com/x"))

    assert again == newer
    assert await webhook(backend) == newer
    assert await webhook(backend, tenant=OTHER_TENANT) == theirs
    assert await backend.get_webhook(TENANT, "wh_2") is None
    assert await backend.get_webhook("initech", "wh_1") is None
    assert await backend.list_webhooks(TENANT) == [older, newer]
    assert await backend.list_webhooks(OTHER_TENANT) == [theirs]


async def test_an_update_changes_only_what_it_names(backend: Backend) -> None:
    old = await register(backend, description="first")
    theirs = await register(backend, "wh_2", tenant=OTHER_TENANT)
    change = WebhookChange(
        url="https://new.example.com/hooks", event_types=("job.completed", "job.failed")
    )

    updated = await backend.update_webhook(TENANT, "wh_1", change)

    expected = dataclasses.replace(
        old, url="https://new.example.com/hooks", event_types=("job.completed", "job.failed")
    )
    assert updated == expected
    assert await webhook(backend) == expected
    cleared = await backend.update_webhook(TENANT, "wh_1", WebhookChange(set_description=True))
    assert cleared is not None
    assert cleared.description is None
    assert cleared.url == expected.url
    assert await backend.update_webhook(TENANT, "wh_9", change) is None
    assert await backend.update_webhook(TENANT, "wh_2", change) is None  # another tenant's
    assert await webhook(backend, "wh_2", OTHER_TENANT) == theirs


async def test_a_rotation_keeps_the_old_secret_signing_until_its_time(backend: Backend) -> None:
    old = await register(backend)
    until = time.time() + 3600
    first, second = new_secret(), new_secret()

    rotated = await backend.update_webhook(
        TENANT, "wh_1", WebhookChange(new_secret=first, previous_secret_until=until)
    )
    again = await backend.update_webhook(
        TENANT, "wh_1", WebhookChange(new_secret=second, previous_secret_until=until)
    )

    assert rotated is not None
    assert (rotated.secret, rotated.previous_secret) == (first, old.secret)
    assert rotated.signing_secrets(time.time()) == (first, old.secret)
    assert again is not None
    assert (again.secret, again.previous_secret) == (second, first)
    assert again.url == old.url


async def test_enabling_and_disabling_keep_the_first_reason(backend: Backend) -> None:
    await register(backend)
    job = await completed(backend)
    await fan_out(backend)
    (delivery,) = await claim(backend)
    await backend.record_deliveries(
        OWNER,
        [DeliveryOutcome(delivery.id, tried(410), "failed", disable_endpoint="410 Gone")],
    )

    disabled = await backend.update_webhook(TENANT, "wh_1", WebhookChange(enabled=False))
    described = await backend.update_webhook(
        TENANT, "wh_1", WebhookChange(description="x", set_description=True)
    )
    enabled = await backend.update_webhook(TENANT, "wh_1", WebhookChange(enabled=True))
    paused = await backend.update_webhook(TENANT, "wh_1", WebhookChange(enabled=False))

    assert job.id == delivery.job_id
    assert disabled is not None
    assert disabled.disabled_reason == "410 Gone"  # already disabled: kept as it was
    assert described is not None
    assert described.disabled_at is not None  # an unrelated change does not enable it
    assert enabled is not None
    assert (enabled.disabled_at, enabled.disabled_reason) == (None, None)
    assert paused is not None
    assert paused.disabled_at is not None
    assert paused.disabled_reason == "disabled by request"


async def test_delete_removes_an_endpoint_once_but_never_default(backend: Backend) -> None:
    await register(backend)
    theirs = await register(backend, "wh_2", tenant=OTHER_TENANT)
    await completed(backend, webhook_url=JOB_URL)
    await fan_out(backend)  # makes the default signer
    signer = await webhook(backend, DEFAULT_ENDPOINT)

    assert [await backend.delete_webhook(TENANT, "wh_1") for _ in range(2)] == [True, False]
    assert not await backend.delete_webhook(TENANT, "wh_2")
    assert not await backend.delete_webhook(TENANT, DEFAULT_ENDPOINT)
    assert await backend.get_webhook(TENANT, "wh_1") is None
    assert await webhook(backend, "wh_2", OTHER_TENANT) == theirs
    assert await webhook(backend, DEFAULT_ENDPOINT) == signer


# -- the outbox ------------------------------------------------------------------------------


async def test_a_job_url_gets_one_delivery_signed_by_the_default_signer(backend: Backend) -> None:
    job = await completed(backend, webhook_url=JOB_URL)

    d = await claim_single(backend)

    signer = await webhook(backend, DEFAULT_ENDPOINT)
    assert signer.secret
    assert (d.job_id, d.tenant, d.endpoint_id, d.url) == (job.id, TENANT, DEFAULT_ENDPOINT, JOB_URL)
    assert (d.type, d.status, d.tries, d.blocked) == ("job.completed", "pending", 0, None)
    assert d.event_id.startswith("evt_")
    assert d.secrets == (signer.secret,)
    finished_at = (await get(backend, job.id)).finished_at
    assert finished_at is not None
    assert d.created_at == pytest.approx(finished_at.timestamp(), abs=1.0)  # when it ended
    assert await backend.list_webhooks(TENANT) == []


async def test_each_tenant_has_its_own_endpoints_and_signer(backend: Backend) -> None:
    theirs = await register(backend, tenant=OTHER_TENANT)
    quiet = await completed(backend, tenant="initech")  # no URL, and no endpoint
    ours = [await completed(backend, webhook_url=JOB_URL) for _ in range(2)]
    other = await completed(backend, webhook_url=JOB_URL, tenant=OTHER_TENANT)

    claimed = {(d.job_id, d.endpoint_id): d for d in await claim(backend)}

    signer = (await webhook(backend, DEFAULT_ENDPOINT)).secret
    their_signer = (await webhook(backend, DEFAULT_ENDPOINT, OTHER_TENANT)).secret
    assert signer != their_signer
    assert {k: (d.url, d.secrets) for k, d in claimed.items()} == {
        (ours[0].id, DEFAULT_ENDPOINT): (JOB_URL, (signer,)),
        (ours[1].id, DEFAULT_ENDPOINT): (JOB_URL, (signer,)),
        (other.id, DEFAULT_ENDPOINT): (JOB_URL, (their_signer,)),
        (other.id, "wh_1"): (ENDPOINT_URL, (theirs.secret,)),
    }
    # one event per job, shared by its deliveries: the same webhook-id everywhere
    events = {(d.job_id, d.event_id) for d in claimed.values()}
    assert len(events) == len({d.job_id for d in claimed.values()}) == 3
    assert len({d.id for d in claimed.values()}) == 4
    assert await backend.list_deliveries("initech", quiet.id) == []
    assert await backend.get_webhook("initech", DEFAULT_ENDPOINT) is None


# -- every terminal path, and the event types ------------------------------------------------

ENDS = [  # how the job ends, its kind, the event type
    ("complete", KIND, "job.completed"), ("cut short", KIND, "job.completed"),
    ("fail", KIND, "job.failed"), ("expire", KIND, "job.failed"),
    ("cancel pending", KIND, "job.cancelled"), ("cancel running: stop", KIND, "job.cancelled"),
    ("cancel running: fail", KIND, "job.cancelled"),
    ("cancel running: retry", KIND, "job.cancelled"),
    ("cancel running: release", KIND, "job.cancelled"),  # the worker gives it back
    ("complete", RESPONSE, "response.completed"), ("cut short", RESPONSE, "response.incomplete"),
    ("filtered", RESPONSE, "response.incomplete"),
    ("cut short, big", RESPONSE, "response.incomplete"),  # a result kept apart, not inline
    ("fail", RESPONSE, "response.failed"), ("expire", RESPONSE, "response.failed"),
    ("cancel pending", RESPONSE, "response.cancelled"),
    ("cancel running: stop", RESPONSE, "response.cancelled"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "kind", "expected"), ENDS)
async def test_every_end_of_a_job_is_notified_once(
    backend: Backend, how: str, kind: str, expected: str
) -> None:
    job = await end(backend, how, kind)

    assert (await get(backend, job.id)).status.is_terminal
    assert await claimed_types(backend) == [(job.id, expected)]
    assert await claim(backend, OTHER_OWNER) == []


async def test_an_event_keeps_its_type_when_the_job_is_deleted_before_fan_out(
    backend: Backend,
) -> None:
    job = await end(backend, "cut short", RESPONSE)

    assert await backend.delete_job(TENANT, job.id)

    assert await claimed_types(backend) == [(job.id, "response.incomplete")]


async def test_a_job_back_to_pending_is_not_notified(backend: Backend) -> None:
    job = await start(backend, webhook_url=JOB_URL, max_attempts=2)
    assert await fail_for_retry(backend, job)
    assert await backend.release_jobs(WORKER, [(await claim_one(backend)).id]) == 1
    assert (await get(backend, job.id)).status is Status.PENDING
    assert await claim(backend) == []

    assert await complete(backend, await claim_one(backend), "done")

    assert await claimed_types(backend) == [(job.id, "job.completed")]


async def test_endpoints_get_the_event_types_they_take(backend: Backend) -> None:
    await register(backend, event_types=("job.failed",))
    await register(backend, "wh_2", disabled_at=time.time(), disabled_reason="paused")
    await register(backend, "wh_3")
    done = await completed(backend)
    failed = await end(backend, "fail")

    claimed = sorted((d.endpoint_id, d.job_id, d.type) for d in await claim(backend))

    assert claimed == [
        (DEFAULT_ENDPOINT, failed.id, "job.failed"),
        ("wh_1", failed.id, "job.failed"),
        *sorted([("wh_3", done.id, "job.completed"), ("wh_3", failed.id, "job.failed")]),
    ]


# -- leases ----------------------------------------------------------------------------------


async def test_a_delivery_whose_lease_ran_out_is_claimed_again(backend: Backend) -> None:
    await completed(backend, webhook_url=JOB_URL)
    [first] = await backend.claim_deliveries(OWNER, 10, SHORT_LEASE)
    assert await claim(backend, OTHER_OWNER) == []  # leased
    await asyncio.sleep(PAST_SHORT_LEASE)

    again = await claim_single(backend, OTHER_OWNER)

    assert (again.id, again.event_id, again.secrets) == (first.id, first.event_id, first.secrets)
    assert await record(backend, first, "succeeded", tried()) == 0
    assert await record(backend, again, "succeeded", tried(), OTHER_OWNER) == 1


async def test_a_claim_takes_at_most_limit(backend: Backend) -> None:
    for _ in range(3):
        await completed(backend, webhook_url=JOB_URL)

    first = await claim(backend, limit=2)
    second = await claim(backend, OTHER_OWNER, limit=2)

    assert (len(first), len(second)) == (2, 1)
    assert len({d.job_id for d in first + second}) == 3
    assert await claim(backend) == []


# -- outcomes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [("succeeded", 204), ("failed", 500)])
async def test_success_or_failure_ends_a_delivery(
    backend: Backend, status: DeliveryStatus, code: int
) -> None:
    job = await completed(backend, webhook_url=JOB_URL)
    delivery = await claim_single(backend)
    attempt = tried(code)
    assert await record(backend, delivery, status, attempt, OTHER_OWNER) == 0
    assert (await only_delivery(backend, job.id)).status == "pending"  # not its lease

    assert await record(backend, delivery, status, attempt) == 1

    assert await claim(backend) == []
    assert await record(backend, delivery, "pending", tried()) == 0
    shown = await only_delivery(backend, job.id)
    assert (shown.id, shown.status, shown.tries, shown.url) == (delivery.id, status, 1, JOB_URL)
    assert (shown.attempts, shown.next_attempt_at) == ((attempt,), None)


async def test_a_pending_outcome_retries_counting_tries(backend: Backend) -> None:
    job = await completed(backend, webhook_url=JOB_URL)
    first = await claim_single(backend)
    one, two = tried(500), tried(502)

    assert await record(backend, first, "pending", one, retry_in=0) == 1
    second = await claim_single(backend, OTHER_OWNER)
    assert await record(backend, second, "pending", two, OTHER_OWNER, retry_in=0) == 1
    third = await claim_single(backend)
    assert await record(backend, third, "pending", tried(503), retry_in=3600) == 1

    assert (second.id, second.event_id, second.tries) == (first.id, first.event_id, 1)
    assert second.attempts == (one,)
    assert (third.id, third.tries, third.attempts) == (first.id, 2, (one, two))
    assert await claim(backend, OTHER_OWNER) == []  # not due for an hour
    assert (await only_delivery(backend, job.id)).tries == 3


async def test_a_replay_leaves_a_delivery_being_sent_to_its_attempt(backend: Backend) -> None:
    job = await completed(backend, webhook_url=JOB_URL)
    (delivery,) = await claim(backend)

    replayed = await backend.replay_delivery(TENANT, job.id, delivery.id)

    assert replayed is not None
    assert replayed.status == "pending"
    assert await claim(backend, OTHER_OWNER) == []  # still leased: not sent twice at once
    assert await record(backend, delivery, "succeeded") == 1  # the attempt's outcome counts
    (shown,) = await backend.list_deliveries(TENANT, job.id) or []
    assert shown.status == "succeeded"


async def test_only_the_latest_attempts_are_kept(backend: Backend) -> None:
    job = await completed(backend, webhook_url=JOB_URL)
    sent = [tried(500 + n) for n in range(MAX_KEPT_ATTEMPTS + 1)]
    for attempt in sent:
        await record(backend, await claim_single(backend), "pending", attempt, retry_in=0)

    shown = await only_delivery(backend, job.id)
    assert (shown.tries, shown.attempts) == (MAX_KEPT_ATTEMPTS + 1, tuple(sent[1:]))


async def test_gone_disables_the_endpoint_but_never_default(backend: Backend) -> None:
    await register(backend)
    job = await completed(backend, webhook_url=JOB_URL)

    for d in await claim(backend):  # no attempt: no try counted
        assert await record(backend, d, "failed", disable_endpoint="410 Gone") == 1

    disabled, signer = await webhook(backend), await webhook(backend, DEFAULT_ENDPOINT)
    assert disabled.disabled_at is not None
    assert disabled.disabled_reason == "410 Gone"
    assert (signer.disabled_at, signer.disabled_reason) == (None, None)
    shown = await backend.list_deliveries(TENANT, job.id)
    assert shown is not None
    assert [(d.status, d.tries, d.attempts) for d in shown] == [("failed", 0, ())] * 2


# -- blocked deliveries, list_deliveries -----------------------------------------------------


@pytest.mark.parametrize("gone", ["deleted", "disabled"])
async def test_a_delivery_to_a_gone_endpoint_is_blocked(backend: Backend, gone: str) -> None:
    await register(backend)
    job = await completed(backend)
    await fan_out(backend)
    if gone == "deleted":
        assert await backend.delete_webhook(TENANT, "wh_1")
    else:
        assert await backend.update_webhook(TENANT, "wh_1", WebhookChange(enabled=False))

    delivery = await claim_single(backend)

    assert (delivery.job_id, delivery.endpoint_id, delivery.secrets) == (job.id, "wh_1", ())
    assert delivery.blocked
    assert gone == "deleted" or "disabled by request" in delivery.blocked


async def test_deliveries_are_listed_for_the_jobs_own_tenant(backend: Backend) -> None:
    await register(backend)
    job = await completed(backend, webhook_url=JOB_URL)
    await fan_out(backend)
    before = await backend.list_deliveries(TENANT, job.id)
    moved = await backend.update_webhook(
        TENANT, "wh_1", WebhookChange(url="https://moved.example.com/hooks")
    )
    assert moved is not None

    assert await backend.list_deliveries(TENANT, "job_unknown") is None
    assert await backend.list_deliveries(OTHER_TENANT, job.id) is None
    assert targets(before) == [(DEFAULT_ENDPOINT, JOB_URL), ("wh_1", ENDPOINT_URL)]
    now = [(DEFAULT_ENDPOINT, JOB_URL), ("wh_1", moved.url)]  # an endpoint's URL, when used
    assert targets(await backend.list_deliveries(TENANT, job.id)) == now
    assert targets(await claim(backend)) == now


# -- replay ----------------------------------------------------------------------------------


async def test_a_replayed_delivery_is_due_again_keeping_its_history(backend: Backend) -> None:
    job = await completed(backend, webhook_url=JOB_URL)
    other = await completed(backend, webhook_url=JOB_URL, tenant=OTHER_TENANT)
    [delivery, theirs] = sorted(await claim(backend), key=lambda d: d.tenant != TENANT)
    attempt = tried()
    await record(backend, delivery, "succeeded", attempt)

    assert await backend.replay_delivery(TENANT, job.id, "dlv_unknown") is None
    assert await backend.replay_delivery(TENANT, other.id, theirs.id) is None
    assert await backend.replay_delivery(OTHER_TENANT, job.id, delivery.id) is None
    assert await backend.replay_delivery(TENANT, other.id, delivery.id) is None  # not its job
    assert (await only_delivery(backend, job.id)).status == "succeeded"
    replayed = await backend.replay_delivery(TENANT, job.id, delivery.id)

    assert replayed is not None
    assert (replayed.id, replayed.status, replayed.tries) == (delivery.id, "pending", 0)
    assert replayed.attempts == (attempt,)
    again = await claim_single(backend, OTHER_OWNER)
    assert (again.id, again.event_id, again.tries) == (delivery.id, delivery.event_id, 0)
    assert again.attempts == (attempt,)


# -- secrets ---------------------------------------------------------------------------------


async def test_old_secrets_sign_during_the_overlap_no_secret_in_reprs(backend: Backend) -> None:
    now = time.time()
    rotating = await register(backend, previous_secret=new_secret(), previous_secret_until=now + 60)
    done = await register(backend, "wh_2", previous_secret=new_secret(), previous_secret_until=now)
    await completed(backend)

    claimed = {d.endpoint_id: d for d in await claim(backend)}

    both = (rotating.secret, rotating.previous_secret)
    assert {i: d.secrets for i, d in claimed.items()} == {"wh_1": both, "wh_2": (done.secret,)}
    assert rotating.signing_secrets(now + 59) == both
    assert rotating.signing_secrets(now + 60) == (rotating.secret,)
    texts = [repr(x) for x in (rotating, await webhook(backend), claimed["wh_1"])]
    assert not [s for s in both if s is None or any(s in text for text in texts)]
