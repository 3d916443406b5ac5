"""The in-memory backend's webhook methods: the same outbox data path as the SQL stores
(``backends/outbox.py``), in dicts owned by one event loop."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    MAX_KEPT_ATTEMPTS,
    RESPONSE_KIND,
    RETENTION_SECONDS,
    Delivery,
    DeliveryOutcome,
    OutboxEvent,
    WebhookChange,
    WebhookEndpoint,
    default_endpoint,
    event_type,
    plan,
    ready_to_send,
)
from longjobs.models import Status
from longjobs.webhooks.signing import new_secret


@dataclass(slots=True)
class _Leased:
    owner: str
    until: float


class MemoryWebhooks:
    """Mixed into ``MemoryBackend``: ``outbox_event`` is called by its one status change."""

    now: Callable[[], float]

    def _webhooks_init(self) -> None:
        self._endpoints: dict[tuple[str, str], WebhookEndpoint] = {}
        self._outbox: list[tuple[OutboxEvent, Callable[[], bytes | None]]] = []
        self._deliveries: dict[str, Delivery] = {}
        self._leases: dict[str, _Leased] = {}
        self._changed: dict[str, float] = {}  # finished deliveries: when

    def outbox_event(
        self,
        *,
        tenant: str,
        job_id: str,
        kind: str,
        status: Status,
        webhook_url: str | None,
        result: Callable[[], bytes | None],
    ) -> None:
        """Record a job's move to a terminal status (called in the same step as the move)."""
        has_endpoints = any(t == tenant and i != DEFAULT_ENDPOINT for (t, i) in self._endpoints)
        if webhook_url is None and not has_endpoints:
            return
        event = OutboxEvent(
            event_id="evt_" + secrets.token_hex(16),
            tenant=tenant,
            job_id=job_id,
            kind=kind,
            status=status.value,
            webhook_url=webhook_url,
            created_at=self.now(),
        )
        self._outbox.append((event, result))

    async def create_webhook(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        return self._endpoints.setdefault((endpoint.tenant, endpoint.id), endpoint)

    async def get_webhook(self, tenant: str, endpoint_id: str) -> WebhookEndpoint | None:
        return self._endpoints.get((tenant, endpoint_id))

    async def list_webhooks(self, tenant: str) -> list[WebhookEndpoint]:
        found = [
            e for (t, i), e in self._endpoints.items() if t == tenant and i != DEFAULT_ENDPOINT
        ]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def update_webhook(
        self, tenant: str, endpoint_id: str, change: WebhookChange
    ) -> WebhookEndpoint | None:
        old = self._endpoints.get((tenant, endpoint_id))
        if old is None:
            return None
        new = self._endpoints[(tenant, endpoint_id)] = change.applied(old, self.now())
        return new

    async def delete_webhook(self, tenant: str, endpoint_id: str) -> bool:
        if endpoint_id == DEFAULT_ENDPOINT:
            return False
        return self._endpoints.pop((tenant, endpoint_id), None) is not None

    def _fan_out(self, now: float) -> None:
        outbox, self._outbox = self._outbox, []
        for event, result in outbox:
            if event.webhook_url is not None and (event.tenant, DEFAULT_ENDPOINT) not in (
                self._endpoints
            ):
                signer = default_endpoint(event.tenant, new_secret(), now)
                self._endpoints[(event.tenant, DEFAULT_ENDPOINT)] = signer
            if event.kind == RESPONSE_KIND:
                kind, status = event.kind, event.status
                event = dataclasses.replace(event, type=event_type(kind, status, result()))
            endpoints = [e for (t, _), e in self._endpoints.items() if t == event.tenant]
            for delivery in plan(event, endpoints, now):
                self._deliveries[delivery.id] = delivery

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[Delivery]:
        now = self.now()
        self._fan_out(now)
        due = sorted(
            (
                d
                for d in self._deliveries.values()
                if d.status == "pending" and (d.next_attempt_at or 0) <= now
            ),
            key=lambda d: d.next_attempt_at or 0,
        )[:limit]
        taken = []
        for d in due:
            self._leases[d.id] = _Leased(owner, now + lease_seconds)
            d = dataclasses.replace(d, next_attempt_at=now + lease_seconds)
            self._deliveries[d.id] = d
            endpoint = self._endpoints.get((d.tenant, d.endpoint_id))
            taken.append(ready_to_send(d, endpoint, now))
        return taken

    async def record_deliveries(self, owner: str, outcomes: Sequence[DeliveryOutcome]) -> int:
        now, applied = self.now(), 0
        for outcome in outcomes:
            lease = self._leases.get(outcome.delivery_id)
            d = self._deliveries.get(outcome.delivery_id)
            if d is None or lease is None or lease.owner != owner or d.status != "pending":
                continue
            del self._leases[d.id]
            attempts = d.attempts + ((outcome.attempt,) if outcome.attempt is not None else ())
            pending = outcome.status == "pending"
            self._deliveries[d.id] = dataclasses.replace(
                d,
                status=outcome.status,
                tries=d.tries + (outcome.attempt is not None),
                next_attempt_at=now + (outcome.retry_in or 0.0) if pending else None,
                attempts=attempts[-MAX_KEPT_ATTEMPTS:],
            )
            self._changed[d.id] = now
            applied += 1
            endpoint = self._endpoints.get((d.tenant, d.endpoint_id))
            if (
                outcome.disable_endpoint
                and endpoint
                and endpoint.id != DEFAULT_ENDPOINT
                and endpoint.disabled_at is None
            ):
                self._endpoints[(d.tenant, d.endpoint_id)] = dataclasses.replace(
                    endpoint, disabled_at=now, disabled_reason=outcome.disable_endpoint
                )
        return applied

    def _job_exists(self, tenant: str, job_id: str) -> bool:
        raise NotImplementedError

    async def list_deliveries(self, tenant: str, job_id: str) -> list[Delivery] | None:
        if not self._job_exists(tenant, job_id):
            return None
        found = [d for d in self._deliveries.values() if d.job_id == job_id and d.tenant == tenant]
        return [self._shown(d) for d in sorted(found, key=lambda d: (d.created_at, d.id))]

    def _shown(self, d: Delivery) -> Delivery:
        endpoint = self._endpoints.get((d.tenant, d.endpoint_id))
        if d.endpoint_id != DEFAULT_ENDPOINT:
            d = dataclasses.replace(d, url=endpoint.url if endpoint else "")
        return d if d.status == "pending" else dataclasses.replace(d, next_attempt_at=None)

    async def replay_delivery(self, tenant: str, job_id: str, delivery_id: str) -> Delivery | None:
        d = self._deliveries.get(delivery_id)
        if d is None or d.tenant != tenant or d.job_id != job_id:
            return None
        lease = self._leases.get(delivery_id)
        if lease is not None and lease.until >= self.now() and d.status == "pending":
            return self._shown(d)  # being sent right now: left to its attempt
        self._leases.pop(delivery_id, None)
        d = dataclasses.replace(d, status="pending", tries=0, next_attempt_at=self.now())
        self._deliveries[delivery_id] = d
        return self._shown(d)

    def _expire_deliveries(self, now: float) -> None:
        for delivery_id, changed in list(self._changed.items()):
            d = self._deliveries.get(delivery_id)
            if d is None or (d.status != "pending" and changed < now - RETENTION_SECONDS):
                self._deliveries.pop(delivery_id, None)
                del self._changed[delivery_id]
