"""The webhook outbox: the values that cross the Backend seam for webhooks, and the pure rules
every backend applies to them.

The data path:

1. A job's move to a terminal status writes one **outbox event** in the same transaction
   (``record_outbox`` in the SQL stores, called by every path that ends a job: finish, cancel,
   release, sweep; the one status-changing method in memory), but only when the job has its
   own webhook URL or its tenant has endpoints. The notification can then never be lost
   between "job done" and "webhook sent". (A trigger did it first, at a fifth of the finish
   throughput: it made SQLite copy every updated row.)
2. ``claim_deliveries`` fans the outbox out: each event gets its type (``job.completed``,
   ``response.incomplete``...), then one **delivery** per endpoint whose filter takes it, plus
   one to the job's own URL; then it takes due deliveries with a lease.
3. The dispatcher (``longjobs.webhooks.delivery``) sends each one, signed, and hands the
   outcome back to ``record_deliveries``, fenced by the lease.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from longjobs.models import JSON

DEFAULT_ENDPOINT = "default"
"""The id of the tenant's signer for the webhook URLs given with single jobs: not an endpoint
one registers, and never listed; its secret is read at ``GET /v1/webhooks/default/secret``."""

JOB_EVENT_TYPES = ("job.completed", "job.failed", "job.cancelled")
RESPONSE_EVENT_TYPES = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
)
EVENT_TYPES = JOB_EVENT_TYPES + RESPONSE_EVENT_TYPES
RESPONSE_KIND = "response"
INCOMPLETE_FINISH_REASONS = ("length", "content_filter")
"""A ``response`` job that completed for one of these reasons is ``incomplete``."""

MAX_RESPONSE_BYTES = 1024
"""How much of a receiver's answer is kept with an attempt."""
MAX_KEPT_ATTEMPTS = 50
"""Attempts kept per delivery (the oldest go first)."""
RETENTION_SECONDS = 7 * 86400.0
"""Finished deliveries are kept this long after their last change."""
FAN_OUT_BATCH = 500
"""Outbox events fanned out per claim."""

DeliveryStatus = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A tenant's registered receiver. ``secret`` signs; ``previous_secret`` signs too until
    ``previous_secret_until`` (a rotation's overlap)."""

    id: str
    tenant: str
    url: str
    secret: str = field(repr=False)
    created_at: float
    event_types: tuple[str, ...] = ()
    """The event types sent to it; empty: all of them."""
    description: str | None = None
    disabled_at: float | None = None
    disabled_reason: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_until: float | None = None

    def takes(self, event_type: str) -> bool:
        return self.disabled_at is None and (not self.event_types or event_type in self.event_types)

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a delivery made at ``now`` is signed with, the current one first."""
        keep = self.previous_secret and (self.previous_secret_until or 0) > now
        return (self.secret, self.previous_secret) if keep else (self.secret,)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class WebhookChange:
    """What one update of an endpoint changes, applied in one statement (so that concurrent
    updates, a rotation and a disabling after a 410 never undo each other). None: unchanged."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    description: str | None = None
    set_description: bool = False
    """Whether ``description`` (None included) replaces the old one."""
    enabled: bool | None = None
    """True clears a disabling; False disables ("disabled by request") unless disabled."""
    new_secret: str | None = field(default=None, repr=False)
    """A rotation: the current secret becomes the previous one, signing until
    ``previous_secret_until``."""
    previous_secret_until: float | None = None

    def applied(self, endpoint: WebhookEndpoint, now: float) -> WebhookEndpoint:
        """``endpoint`` after this change (the in-memory store's way; SQL does the same)."""
        changed = endpoint
        if self.url is not None:
            changed = dataclasses.replace(changed, url=self.url)
        if self.event_types is not None:
            changed = dataclasses.replace(changed, event_types=self.event_types)
        if self.set_description:
            changed = dataclasses.replace(changed, description=self.description)
        if self.enabled is True:
            changed = dataclasses.replace(changed, disabled_at=None, disabled_reason=None)
        elif self.enabled is False and changed.disabled_at is None:
            changed = dataclasses.replace(
                changed, disabled_at=now, disabled_reason=DISABLED_BY_REQUEST
            )
        if self.new_secret is not None:
            changed = dataclasses.replace(
                changed,
                secret=self.new_secret,
                previous_secret=endpoint.secret,
                previous_secret_until=self.previous_secret_until,
            )
        return changed

    def params(self) -> dict[str, Any]:
        """The parameters of the SQL stores' ``update_webhook``."""
        return {
            "url": self.url,
            "event_types": None if self.event_types is None else event_types_json(self.event_types),
            "set_description": self.set_description,
            "description": self.description,
            "enabled": None if self.enabled is None else int(self.enabled),
            "new_secret": self.new_secret,
            "previous_secret_until": self.previous_secret_until,
        }


DISABLED_BY_REQUEST = "disabled by request"


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One try: when, what came back (status, the start of the body) or what went wrong."""

    at: float
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    response: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "at": self.at,
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "error": self.error,
            "response": self.response,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliveryAttempt:
        return cls(
            at=data["at"],
            duration_ms=data["duration_ms"],
            status_code=data.get("status_code"),
            error=data.get("error"),
            response=data.get("response"),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint (or to the job's own URL)."""

    id: str
    event_id: str
    """The ``webhook-id``: the same on every attempt, and for every endpoint of the event."""
    tenant: str
    job_id: str
    endpoint_id: str
    url: str
    type: str
    created_at: float
    """When the job reached its terminal status (the event's ``created_at``)."""
    status: DeliveryStatus = "pending"
    tries: int = 0
    """Attempts since the delivery was created or last replayed (the retry schedule's step)."""
    next_attempt_at: float | None = None
    attempts: tuple[DeliveryAttempt, ...] = ()
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Filled by ``claim_deliveries`` only: the secrets to sign with. Empty when the endpoint
    is gone or disabled; ``blocked`` says why."""
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What the dispatcher made of one attempt."""

    delivery_id: str
    attempt: DeliveryAttempt | None
    """None when nothing was sent (the endpoint was gone or disabled)."""
    status: DeliveryStatus
    retry_in: float | None = None
    """With status ``pending``: seconds until the next attempt."""
    disable_endpoint: str | None = None
    """The reason to disable the delivery's endpoint (it answered 410 Gone)."""
    error: str | None = None
    """Why the delivery failed without an attempt."""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A terminal transition as the outbox recorded it."""

    event_id: str
    tenant: str
    job_id: str
    kind: str
    status: str
    webhook_url: str | None
    created_at: float
    type: str | None = None
    """Decided when the job ended (a ``response`` job's result says whether it is
    ``incomplete``); None: ``job.<status>`` or ``response.<status>``."""


def new_delivery_id() -> str:
    return "dlv_" + secrets.token_hex(16)


def plan(event: OutboxEvent, endpoints: Sequence[WebhookEndpoint], now: float) -> list[Delivery]:
    """The deliveries of one outbox event: one per endpoint (but ``default``) whose filter
    takes its type, and one to the job's own URL, all due ``now``."""
    type_ = event.type or event_type(event.kind, event.status, None)
    targets = [(e.id, e.url) for e in endpoints if e.id != DEFAULT_ENDPOINT and e.takes(type_)]
    if event.webhook_url is not None:
        targets.append((DEFAULT_ENDPOINT, event.webhook_url))
    return [
        Delivery(
            id=new_delivery_id(),
            event_id=event.event_id,
            tenant=event.tenant,
            job_id=event.job_id,
            endpoint_id=endpoint_id,
            url=url,
            type=type_,
            created_at=event.created_at,
            next_attempt_at=now,
        )
        for endpoint_id, url in targets
    ]


def ready_to_send(delivery: Delivery, endpoint: WebhookEndpoint | None, now: float) -> Delivery:
    """A delivery just leased, with what its dispatcher needs: the URL (an endpoint's as it is
    now, or the job's own) and the secrets; or ``blocked`` and no URL when it cannot be sent."""
    blocked = blocked_reason(endpoint)
    if endpoint is None or blocked is not None:
        return dataclasses.replace(delivery, url="", secrets=(), blocked=blocked)
    url = delivery.url if delivery.endpoint_id == DEFAULT_ENDPOINT else endpoint.url
    return dataclasses.replace(delivery, url=url, secrets=endpoint.signing_secrets(now))


def blocked_reason(endpoint: WebhookEndpoint | None) -> str | None:
    """Why nothing can be sent to ``endpoint`` (None: it can be)."""
    if endpoint is None:
        return "the endpoint was deleted"
    if endpoint.disabled_at is not None:
        return f"the endpoint is disabled: {endpoint.disabled_reason or 'by request'}"
    return None


def event_type(kind: str, status: str, result: str | bytes | None) -> str:
    """The webhook event type of a job of ``kind`` that ended ``status``; a ``response`` job is
    ``response.*`` (``incomplete`` when its result's finish reason says so)."""
    if kind != RESPONSE_KIND:
        return f"job.{status}"
    if status == "completed" and result is not None:
        try:
            reason = json.loads(result).get("finish_reason")
        except (ValueError, AttributeError):
            reason = None
        if reason in INCOMPLETE_FINISH_REASONS:
            return "response.incomplete"
    return f"response.{status}"


def payload(delivery: Delivery) -> bytes:
    """The thin event body: the same bytes on every attempt. A response's id is ``resp_``."""
    subject = delivery.job_id
    if delivery.type.startswith("response."):
        subject = "resp_" + subject.removeprefix("job_")
    body = {
        "id": delivery.event_id,
        "object": "event",
        "type": delivery.type,
        "created_at": int(delivery.created_at),
        "data": {"id": subject},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def attempts_json(attempts: tuple[DeliveryAttempt, ...]) -> str:
    return json.dumps([a.to_json() for a in attempts[-MAX_KEPT_ATTEMPTS:]], separators=(",", ":"))


def attempts_from_json(text: str | None) -> tuple[DeliveryAttempt, ...]:
    return tuple(DeliveryAttempt.from_json(a) for a in json.loads(text or "[]"))


def event_types_json(types: tuple[str, ...]) -> str:
    return json.dumps(list(types))


def event_types_from_json(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text or "[]"))


def default_endpoint(tenant: str, secret: str, now: float) -> WebhookEndpoint:
    """The tenant's signer for single jobs' webhook URLs, made on first use."""
    return WebhookEndpoint(
        id=DEFAULT_ENDPOINT, tenant=tenant, url="", secret=secret, created_at=now
    )
