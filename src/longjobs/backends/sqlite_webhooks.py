"""The SQLite backend's webhook methods: endpoints, the outbox's fan-out, deliveries.

The outbox itself is written by ``sqlite_sql.record_outbox`` in the transaction that ends a
job; see ``backends/outbox.py`` for the whole data path.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
from longjobs.backends.sqlite_sql import Q
from longjobs.webhooks.signing import new_secret

if TYPE_CHECKING:
    from longjobs.backends.sqlite_db import Readers, Tx, Writer


class SQLiteWebhooks:
    """Mixed into ``SQLiteBackend``, which has the writer and the readers."""

    @property
    def writer(self) -> Writer:
        raise NotImplementedError

    @property
    def readers(self) -> Readers:
        raise NotImplementedError

    async def create_webhook(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        def op(tx: Tx) -> WebhookEndpoint:
            tx.conn.execute(Q["insert_webhook"], endpoint_params(endpoint))
            row = tx.conn.execute(Q["get_webhook"], (endpoint.tenant, endpoint.id)).fetchone()
            return endpoint_from_row(row)

        return await self.writer.run(op)

    async def get_webhook(self, tenant: str, endpoint_id: str) -> WebhookEndpoint | None:
        def op(conn: sqlite3.Connection) -> WebhookEndpoint | None:
            row = conn.execute(Q["get_webhook"], (tenant, endpoint_id)).fetchone()
            return None if row is None else endpoint_from_row(row)

        return await self.readers.run_point(op)

    async def list_webhooks(self, tenant: str) -> list[WebhookEndpoint]:
        def op(conn: sqlite3.Connection) -> list[WebhookEndpoint]:
            return [endpoint_from_row(r) for r in conn.execute(Q["list_webhooks"], (tenant,))]

        return await self.readers.run(op)

    async def update_webhook(
        self, tenant: str, endpoint_id: str, change: WebhookChange
    ) -> WebhookEndpoint | None:
        def op(tx: Tx) -> WebhookEndpoint | None:
            params = {**change.params(), "tenant": tenant, "id": endpoint_id, "now": tx.now}
            row = tx.conn.execute(Q["update_webhook"], params).fetchone()
            return None if row is None else endpoint_from_row(row)

        return await self.writer.run(op)

    async def delete_webhook(self, tenant: str, endpoint_id: str) -> bool:
        def op(tx: Tx) -> bool:
            return tx.conn.execute(Q["delete_webhook"], (tenant, endpoint_id)).rowcount == 1

        return await self.writer.run(op)

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[Delivery]:
        def due(conn: sqlite3.Connection) -> bool:  # the writer's clock is this machine's too
            return bool(conn.execute(Q["deliveries_due"], (time.time(),)).fetchone()[0])

        if not await self.readers.run_point(due):
            return []  # claiming is a write; most looks find nothing to do

        def op(tx: Tx) -> list[Delivery]:
            fan_out(tx)
            params = {"owner": owner, "now": tx.now, "lease": lease_seconds, "limit": limit}
            rows = tx.conn.execute(Q["claim_deliveries"], params).fetchall()
            endpoints: dict[tuple[str, str], WebhookEndpoint | None] = {}
            for row in rows:
                key = (row["tenant"], row["endpoint_id"])
                if key not in endpoints:
                    found = tx.conn.execute(Q["get_webhook"], key).fetchone()
                    endpoints[key] = None if found is None else endpoint_from_row(found)
            return [claimed(r, endpoints[(r["tenant"], r["endpoint_id"])], tx.now) for r in rows]

        return await self.writer.run(op, inline=False)

    async def record_deliveries(self, owner: str, outcomes: Sequence[DeliveryOutcome]) -> int:
        def op(tx: Tx) -> int:
            applied = 0
            for outcome in outcomes:
                row = tx.conn.execute(Q["leased_attempts"], (outcome.delivery_id, owner)).fetchone()
                if row is None:
                    continue
                params = {
                    "id": outcome.delivery_id,
                    "owner": owner,
                    "status": outcome.status,
                    "tried": 1 if outcome.attempt is not None else 0,
                    "next_attempt_at": (
                        tx.now + (outcome.retry_in or 0.0) if outcome.status == "pending" else None
                    ),
                    "attempts": recorded_attempts(row["attempts"], outcome),
                    "now": tx.now,
                }
                applied += tx.conn.execute(Q["record_delivery"], params).rowcount
                if outcome.disable_endpoint is not None:
                    found = tx.conn.execute(Q["endpoint_of"], (outcome.delivery_id,)).fetchone()
                    tx.conn.execute(
                        Q["disable_webhook"],
                        (tx.now, outcome.disable_endpoint, found["tenant"], found["endpoint_id"]),
                    )
            return applied

        return await self.writer.run(op)

    async def list_deliveries(self, tenant: str, job_id: str) -> list[Delivery] | None:
        def op(conn: sqlite3.Connection) -> list[Delivery] | None:
            if conn.execute(Q["job_exists"], (job_id, tenant)).fetchone() is None:
                return None
            rows = conn.execute(Q["deliveries_of_job"], (job_id, tenant)).fetchall()
            return [delivery_from_row(r, r["shown_url"]) for r in rows]

        return await self.readers.run(op)

    async def replay_delivery(self, tenant: str, job_id: str, delivery_id: str) -> Delivery | None:
        def op(tx: Tx) -> Delivery | None:
            params = {"id": delivery_id, "tenant": tenant, "job_id": job_id, "now": tx.now}
            tx.conn.execute(Q["replay_delivery"], params)
            rows = tx.conn.execute(Q["deliveries_of_job"], (job_id, tenant)).fetchall()
            row = next((r for r in rows if r["id"] == delivery_id), None)
            return None if row is None else delivery_from_row(row, row["shown_url"])

        return await self.writer.run(op)


def fan_out(tx: Tx) -> None:
    """Turn the outbox's events into deliveries (in the claiming transaction)."""
    rows = tx.conn.execute(Q["outbox_events"], (FAN_OUT_BATCH,)).fetchall()
    if not rows:
        return
    endpoints: dict[str, list[WebhookEndpoint]] = {}
    deliveries: list[tuple[object, ...]] = []
    for row in rows:
        event = outbox_event_from_row(row)
        if event.tenant not in endpoints:
            found = tx.conn.execute(Q["endpoints_of_tenant"], (event.tenant,)).fetchall()
            endpoints[event.tenant] = [endpoint_from_row(r) for r in found]
        if event.webhook_url is not None and not any(
            e.id == DEFAULT_ENDPOINT for e in endpoints[event.tenant]
        ):
            signer = default_endpoint(event.tenant, new_secret(), tx.now)
            tx.conn.execute(Q["insert_webhook"], endpoint_params(signer))
            endpoints[event.tenant].append(signer)
        deliveries += [
            delivery_row(d, tx.now) for d in plan(event, endpoints[event.tenant], tx.now)
        ]
        tx.conn.execute(Q["delete_outbox_event"], (row["num"],))
    tx.conn.executemany(Q["insert_delivery"], deliveries)
