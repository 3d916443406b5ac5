"""The SQLite backend's queue statistics and worker registry (``backends/stats.py``)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from longjobs.backends.sqlite_sql import Q
from longjobs.backends.stats import QueueStats, check_minutes, queue_stats_of, window_start

if TYPE_CHECKING:
    from longjobs.backends.sqlite_db import Readers, Tx, Writer


class SQLiteStats:
    """Mixed into ``SQLiteBackend``, which has the writer and the readers."""

    @property
    def writer(self) -> Writer:
        raise NotImplementedError

    @property
    def readers(self) -> Readers:
        raise NotImplementedError

    async def queue_stats(self, tenant: str, *, minutes: int = 15) -> QueueStats:
        check_minutes(minutes)
        now = time.time()  # the clock of the writer's julianday('now'), as other reads use
        params = {"tenant": tenant, "since": window_start(now, minutes), "now": now}

        def op(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(Q["queue_stats"], params).fetchall()

        return queue_stats_of(now, minutes, await self.readers.run(op))

    async def worker_seen(self, worker: str, *, ttl_seconds: float) -> None:
        def op(tx: Tx) -> None:
            tx.conn.execute(Q["drop_expired_workers"], (tx.now,))
            tx.conn.execute(Q["worker_seen"], (worker, tx.now + ttl_seconds))

        await self.writer.run(op)

    async def worker_gone(self, worker: str) -> None:
        def op(tx: Tx) -> None:
            tx.conn.execute(Q["worker_gone"], (worker,))

        await self.writer.run(op)
