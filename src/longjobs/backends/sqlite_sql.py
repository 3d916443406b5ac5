"""The SQLite backend's SQL: named queries, the schema and its creation, whole-job rows, status
events, and the sweep of expired leases and results (run inside the writer's transactions)."""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from longjobs.backends.base import Sweep
from longjobs.backends.notify import WORK, job_key
from longjobs.backends.outbox import RETENTION_SECONDS
from longjobs.backends.queries import load_queries
from longjobs.backends.rows import JOB_SELECT, dumps, status_event
from longjobs.backends.settle import lease_expired, lease_expired_event
from longjobs.backends.sqlite_db import Tx, connect, is_busy
from longjobs.errors import ConfigurationError, SchemaVersionError
from longjobs.models import Status

Q = {name: sql.replace("$job_columns", JOB_SELECT) for name, sql in load_queries("sqlite").items()}
SCHEMA_VERSION = 5  # 2: api_keys; 3: jobs.change (the change feed); 4: webhooks; 5: workers
PENDING_EVENT = status_event(Status.PENDING, 0)


def statements(script: str) -> list[str]:
    """Split a script into complete statements (semicolons in comments are no boundary)."""
    found, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    return found


def running_event(attempt: int) -> str:
    return f'{{"status":"running","attempt":{int(attempt)}}}'


_SYNCHRONOUS = {"off", "normal", "full", "extra"}


def parse_sqlite_url(url: str) -> tuple[str, str]:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` → (path, synchronous mode)."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path:
        raise ConfigurationError(f"invalid SQLite URL {url!r}: use sqlite:///path/to/file.db")
    query = parse_qs(parts.query, keep_blank_values=True)
    synchronous = query.get("synchronous", ["normal"])[0].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
    return path, synchronous


def lock_timeout_of(url: str, default: float) -> float:
    """``?lock_timeout=S`` of a SQLite URL: how long a write waits for another process's lock
    before the store counts as unavailable (the API then answers 503 with Retry-After)."""
    values = parse_qs(urlsplit(url).query).get("lock_timeout")
    if not values:
        return default
    try:
        seconds = float(values[0])
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ConfigurationError("lock_timeout must be a number of seconds in (0, 3600]")
    return seconds


def job_rows(conn: sqlite3.Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``JOB_COLUMNS`` as plain tuples (sqlite3.Row looks names up one by one)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
    return rows


def insert_status(tx: Tx, job: tuple[int, str], seq: int, data: dict[str, Any]) -> None:
    """Append a status event to job ``(num, id)``."""
    tx.conn.execute(Q["insert_event"], (job[0], seq, "status", tx.now, dumps(data)))
    tx.wrote(job_key(job[1]))


_ADDED_COLUMNS = {"change": "INTEGER NOT NULL DEFAULT 0", "webhook_url": "TEXT"}
"""Columns of ``jobs`` added after version 1: by version 3 (the change feed) and 4."""


def record_outbox(tx: Tx, nums: list[int], types: dict[int, str] | None = None) -> None:
    """Give the jobs ``nums`` that just ended their webhook events (``backends/outbox.py``), in
    the transaction that ended them; ``types``: event types decided already, by job number."""
    if nums:
        types_json = dumps({str(num): kind for num, kind in (types or {}).items()})
        params = {"now": tx.now, "nums": dumps(nums), "types": types_json}
        tx.conn.execute(Q["record_outbox"], params)


def create_schema(path: str, synchronous: str, lock_timeout: float) -> None:
    """Create or check the schema; processes starting together on a new file take turns
    (switching a new file to WAL can answer "locked" without waiting for the other)."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            return _create_schema_once(path, synchronous, lock_timeout)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.02 + random.random() * 0.05)


def _create_schema_once(path: str, synchronous: str, lock_timeout: float) -> None:
    conn = connect(path, synchronous=synchronous, timeout=lock_timeout)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.execute("ROLLBACK")
            raise SchemaVersionError(
                f"{path} has schema version {version}; this longjobs knows only "
                f"{SCHEMA_VERSION}: upgrade longjobs"
            )
        # The columns that CREATE TABLE IF NOT EXISTS cannot add to an older file's jobs.
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED_COLUMNS.items():
            if columns and name not in columns:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        for statement in statements(Q["schema"]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def sweep_expired(tx: Tx) -> Sweep:
    counts = {Status.PENDING: 0, Status.FAILED: 0, Status.CANCELLED: 0}
    ended_nums: list[int] = []
    for row in tx.conn.execute(Q["expired_leases"], (tx.now,)).fetchall():
        status, error = lease_expired(
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            cancel_requested=bool(row["cancel_requested"]),
        )
        ended = tx.conn.execute(
            Q["end_expired_lease"],
            {
                "status": status.value,
                "error": error.model_dump_json() if error else None,
                "finished_at": None if status is Status.PENDING else tx.now,
                "now": tx.now,
                "id": row["id"],
                "attempt": row["attempt"],
            },
        ).fetchone()
        if ended is not None:
            counts[status] += 1
            if status is not Status.PENDING:
                ended_nums.append(ended["num"])
            data = lease_expired_event(status, row["attempt"], error)
            insert_status(tx, (ended["num"], row["id"]), ended["last_seq"], data)
    record_outbox(tx, ended_nums)
    if counts[Status.PENDING]:
        tx.notes.add(WORK)
    tx.conn.execute(Q["expire_results"], (tx.now,))  # the large ones, kept apart
    expired = tx.conn.execute(Q["mark_results_expired"], (tx.now,)).rowcount
    tx.conn.execute(Q["expire_deliveries"], (tx.now - RETENTION_SECONDS,))
    return Sweep(
        requeued=counts[Status.PENDING],
        failed=counts[Status.FAILED],
        cancelled=counts[Status.CANCELLED],
        results_expired=max(expired, 0),
    )
