"""The PostgreSQL backend's webhook methods: endpoints, the outbox's fan-out, deliveries.

The outbox is written by ``record_outbox`` in the transaction that ends a job; see
``backends/outbox.py`` for the whole data path. Fan-out and claims take rows with
``SKIP LOCKED``, so any number of processes share the work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from longjobs.backends.outbox import (
    DEFAULT_ENDPOINT,
    FAN_OUT_BATCH,
    Delivery,
    DeliveryOutcome,
    WebhookChange,
    WebhookEndpoint,
    default_endpoint,
    plan,
)
from longjobs.backends.outbox_rows import (
    claimed,
    delivery_from_row,
    delivery_row,
    endpoint_from_row,
    endpoint_params,
    outbox_event_from_row,
    recorded_attempts,
)
from longjobs.backends.postgres_db import Q, storable, text
from longjobs.webhooks.signing import new_secret

if TYPE_CHECKING:
    from longjobs.backends.postgres_db import Database, Tx


def _insert_args(endpoint: WebhookEndpoint) -> list[Any]:
    p = endpoint_params(endpoint)
    p["description"] = text(p["description"])  # text columns cannot hold NUL
    return [
        p["tenant"], p["id"], p["url"], p["secret"], p["previous_secret"],
        p["previous_secret_until"], p["event_types"], p["description"], p["created_at"],
        p["disabled_at"], p["disabled_reason"],
    ]  # fmt: skip


class PostgresWebhooks:
    """Mixed into ``PostgresBackend``, which has the database."""

    db: Database

    async def create_webhook(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        async def op(tx: Tx) -> WebhookEndpoint:
            await tx.conn.execute(Q["insert_webhook"], *_insert_args(endpoint))
            row = await tx.conn.fetchrow(Q["get_webhook"], endpoint.tenant, endpoint.id)
            return endpoint_from_row(row)

        return await self.db.write(op)

    async def get_webhook(self, tenant: str, endpoint_id: str) -> WebhookEndpoint | None:
        if not storable(endpoint_id):
            return None
        row = await self.db.fetchrow(Q["get_webhook"], tenant, endpoint_id)
        return None if row is None else endpoint_from_row(row)

    async def list_webhooks(self, tenant: str) -> list[WebhookEndpoint]:
        return [endpoint_from_row(r) for r in await self.db.fetch(Q["list_webhooks"], tenant)]

    async def update_webhook(
        self, tenant: str, endpoint_id: str, change: WebhookChange
    ) -> WebhookEndpoint | None:
        if not storable(endpoint_id):
            return None
        p = change.params()

        async def op(tx: Tx) -> WebhookEndpoint | None:
            row = await tx.conn.fetchrow(
                Q["update_webhook"], tenant, endpoint_id, p["url"], p["event_types"],
                p["set_description"], text(p["description"]), p["enabled"], p["new_secret"],
                p["previous_secret_until"],
            )  # fmt: skip
            return None if row is None else endpoint_from_row(row)

        return await self.db.write(op)

    async def delete_webhook(self, tenant: str, endpoint_id: str) -> bool:
        if not storable(endpoint_id):
            return False

        async def op(tx: Tx) -> bool:
            done = await tx.conn.execute(Q["delete_webhook"], tenant, endpoint_id)
            return str(done) == "DELETE 1"

        return await self.db.write(op)

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[Delivery]:
        if not await self.db.fetchval(Q["deliveries_due"]):
            return []  # claiming is a write; most looks find nothing to do

        async def op(tx: Tx) -> list[Delivery]:
            now = await fan_out(tx)
            rows = await tx.conn.fetch(Q["claim_deliveries"], owner, lease_seconds, limit)
            endpoints: dict[tuple[str, str], WebhookEndpoint | None] = {}
            for row in rows:
                key = (row["tenant"], row["endpoint_id"])
                if key not in endpoints:
                    found = await tx.conn.fetchrow(Q["get_webhook"], *key)
                    endpoints[key] = None if found is None else endpoint_from_row(found)
            return [claimed(r, endpoints[(r["tenant"], r["endpoint_id"])], now) for r in rows]

        return await self.db.write(op)

    async def record_deliveries(self, owner: str, outcomes: Sequence[DeliveryOutcome]) -> int:
        async def op(tx: Tx) -> int:
            applied = 0
            for outcome in outcomes:
                old = await tx.conn.fetchval(Q["leased_attempts"], outcome.delivery_id, owner)
                if old is None:
                    continue
                pending = outcome.status == "pending"
                done = await tx.conn.execute(
                    Q["record_delivery"],
                    outcome.delivery_id,
                    owner,
                    outcome.status,
                    1 if outcome.attempt is not None else 0,
                    (outcome.retry_in or 0.0) if pending else None,
                    recorded_attempts(old, outcome),
                )
                applied += str(done) == "UPDATE 1"
                if outcome.disable_endpoint is not None:
                    await tx.conn.execute(
                        Q["disable_webhook"], outcome.disable_endpoint, outcome.delivery_id
                    )
            return applied

        return await self.db.write(op)

    async def list_deliveries(self, tenant: str, job_id: str) -> list[Delivery] | None:
        if not storable(job_id):
            return None
        if await self.db.fetchval(Q["job_exists"], job_id, tenant) is None:
            return None
        rows = await self.db.fetch(Q["deliveries_of_job"], job_id, tenant)
        return [delivery_from_row(r, r["shown_url"]) for r in rows]

    async def replay_delivery(self, tenant: str, job_id: str, delivery_id: str) -> Delivery | None:
        if not (storable(job_id) and storable(delivery_id)):
            return None

        async def op(tx: Tx) -> Delivery | None:
            await tx.conn.execute(Q["replay_delivery"], delivery_id, tenant, job_id)
            rows = await tx.conn.fetch(Q["deliveries_of_job"], job_id, tenant)
            row = next((r for r in rows if r["id"] == delivery_id), None)
            return None if row is None else delivery_from_row(row, row["shown_url"])

        return await self.db.write(op)


async def record_outbox(tx: Tx, nums: list[int], types: dict[int, str] | None = None) -> None:
    """Give the jobs ``nums`` that just ended their webhook events, in the transaction that
    ended them; ``types``: event types decided already, by job number."""
    if nums:
        types_json = json.dumps({str(num): kind for num, kind in (types or {}).items()})
        await tx.conn.execute(Q["record_outbox"], nums, types_json)


async def fan_out(tx: Tx) -> float:
    """Turn the outbox's events into deliveries (in the claiming transaction); the store's
    time."""
    now = float(await tx.conn.fetchval(Q["now"]))
    rows = await tx.conn.fetch(Q["outbox_events"], FAN_OUT_BATCH)
    if not rows:
        return now
    endpoints: dict[str, list[WebhookEndpoint]] = {}
    deliveries: list[tuple[Any, ...]] = []
    for row in rows:
        event = outbox_event_from_row(row)
        if event.tenant not in endpoints:
            found = await tx.conn.fetch(Q["endpoints_of_tenant"], event.tenant)
            endpoints[event.tenant] = [endpoint_from_row(r) for r in found]
        if event.webhook_url is not None and not any(
            e.id == DEFAULT_ENDPOINT for e in endpoints[event.tenant]
        ):
            signer = default_endpoint(event.tenant, new_secret(), now)
            await tx.conn.execute(Q["insert_webhook"], *_insert_args(signer))
            stored = await tx.conn.fetchrow(Q["get_webhook"], event.tenant, DEFAULT_ENDPOINT)
            endpoints[event.tenant].append(endpoint_from_row(stored))
        deliveries += [delivery_row(d, now) for d in plan(event, endpoints[event.tenant], now)]
    await tx.conn.execute(Q["delete_outbox_events"], [r["num"] for r in rows])
    if deliveries:
        await tx.conn.executemany(Q["insert_delivery"], deliveries)
    return now
