"""The raw SQLite limit for a queue's insert + claim + complete, for comparison."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bench.harness import Measurement


def _cycle(conn: sqlite3.Connection, batch: int, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        with conn:
            conn.executemany("INSERT INTO q (status) VALUES ('pending')", [()] * batch)
        with conn:
            ids = conn.execute(
                "UPDATE q SET status = 'running' WHERE id IN "
                "(SELECT id FROM q WHERE status = 'pending' LIMIT ?) RETURNING id",
                (batch,),
            ).fetchall()
        with conn:
            conn.executemany("UPDATE q SET status = 'completed' WHERE id = ?", ids)
    return batch * rounds / (time.perf_counter() - start)


def raw_limit(tmp: Path) -> list[Measurement]:
    path = tmp / "raw.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    conn.execute("CREATE INDEX q_pending ON q (id) WHERE status = 'pending'")
    single, batched = _cycle(conn, 1, 5000), _cycle(conn, 100, 500)
    conn.close()
    return [
        Measurement("raw SQLite insert + claim + complete", "one row per commit", round(single),
                    "jobs/s"),
        Measurement("raw SQLite insert + claim + complete", "batches of 100", round(batched),
                    "jobs/s"),
    ]  # fmt: skip
