"""The PostgreSQL backend's queue statistics and worker registry (``backends/stats.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longjobs.backends.postgres_db import Q
from longjobs.backends.stats import QueueStats, check_minutes, queue_stats_of, window_start

if TYPE_CHECKING:
    import asyncpg

    from longjobs.backends.postgres_db import Conn, Database


class PostgresStats:
    """Mixed into ``PostgresBackend``, which has the database."""

    db: Database

    async def queue_stats(self, tenant: str, *, minutes: int = 15) -> QueueStats:
        check_minutes(minutes)

        async def op(conn: Conn) -> tuple[float, list[asyncpg.Record]]:
            now = float(await conn.fetchval(Q["now"]))
            rows = await conn.fetch(Q["queue_stats"], tenant, window_start(now, minutes), now)
            return now, rows

        now, rows = await self.db.read(op)
        return queue_stats_of(now, minutes, rows)

    async def worker_seen(self, worker: str, *, ttl_seconds: float) -> None:
        await self.db.fetch(Q["worker_seen"], worker, float(ttl_seconds))

    async def worker_gone(self, worker: str) -> None:
        await self.db.fetch(Q["worker_gone"], worker)
