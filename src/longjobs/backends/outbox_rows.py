"""Rows of the webhook tables in the SQL stores (sqlite3.Row, asyncpg.Record: read by column
name) and the values written to them."""

from __future__ import annotations

from typing import Any

from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    Delivery,
    DeliveryOutcome,
    OutboxEvent,
    WebhookEndpoint,
    attempts_from_json,
    attempts_json,
    event_types_from_json,
    event_types_json,
    ready_to_send,
)


def outbox_event_from_row(row: Any) -> OutboxEvent:
    """An event of ``outbox_events`` (a row of ``webhook_outbox``)."""
    return OutboxEvent(
        event_id=row["event_id"],
        tenant=row["tenant"],
        job_id=row["job_id"],
        kind=row["kind"],
        status=row["status"],
        webhook_url=row["webhook_url"],
        created_at=row["created_at"],
        type=row["type"],
    )


def endpoint_from_row(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        tenant=row["tenant"],
        url=row["url"],
        secret=row["secret"],
        created_at=row["created_at"],
        event_types=event_types_from_json(row["event_types"]),
        description=row["description"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        previous_secret=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
    )


def endpoint_params(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "tenant": endpoint.tenant,
        "id": endpoint.id,
        "url": endpoint.url,
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_secret_until": endpoint.previous_secret_until,
        "event_types": event_types_json(endpoint.event_types),
        "description": endpoint.description,
        "created_at": endpoint.created_at,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
    }


def delivery_from_row(
    row: Any, url: str | None, secrets_: tuple[str, ...] = (), blocked: str | None = None
) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        tenant=row["tenant"],
        job_id=row["job_id"],
        endpoint_id=row["endpoint_id"],
        url=url or "",
        type=row["type"],
        created_at=row["created_at"],
        status=row["status"],
        tries=row["tries"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        attempts=attempts_from_json(row["attempts"]),
        secrets=secrets_,
        blocked=blocked,
    )


def delivery_row(delivery: Delivery, now: float) -> tuple[Any, ...]:
    """The values of ``insert_delivery``: an endpoint's URL is read at each attempt, only the
    job's own URL is stored."""
    url = delivery.url if delivery.endpoint_id == DEFAULT_ENDPOINT else None
    return (
        delivery.id, delivery.event_id, delivery.tenant, delivery.job_id, delivery.endpoint_id,
        url, delivery.type, delivery.created_at, delivery.next_attempt_at, now,
    )  # fmt: skip


def claimed(row: Any, endpoint: WebhookEndpoint | None, now: float) -> Delivery:
    """A delivery just leased (``ready_to_send``)."""
    return ready_to_send(delivery_from_row(row, row["url"]), endpoint, now)


def recorded_attempts(old: str | None, outcome: DeliveryOutcome) -> str:
    """The attempts column after ``outcome``."""
    attempts = attempts_from_json(old)
    if outcome.attempt is not None:
        attempts += (outcome.attempt,)
    return attempts_json(attempts)
