"""The embedded default: jobs in one SQLite file (WAL), shared by any number of local processes.

Durability: WAL with ``synchronous=NORMAL`` by default, which survives a crash of any process
(kill -9) but may lose the last commits on power loss; add ``?synchronous=full`` to the URL to make
every commit survive power loss too. Processes on one file notice each other's writes by polling
``PRAGMA data_version`` every ``poll_interval`` while somebody waits; within a process, waiters
are woken as soon as the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from longjobs.backends.base import (
    Completed,
    Failed,
    Finish,
    Heartbeat,
    JobUpdate,
    NewJob,
    StoredResult,
    Sweep,
)
from longjobs.backends.notify import ANY_JOB, WORK, Notifier, Wake, Watch, cancel_key, job_key
from longjobs.backends.queries import load_queries
from longjobs.backends.rows import (
    decode_cursor,
    dumps,
    encode_cursor,
    event_from_row,
    job_from_new,
    job_from_row,
    status_event,
)
from longjobs.backends.sqlite_db import Readers, Tx, Writer, connect, is_busy
from longjobs.errors import ConfigurationError, IdempotencyConflict, SchemaVersionError
from longjobs.models import Event, Job, JobError, Page, Status
from longjobs.settings import Settings

Q = load_queries("sqlite")
SCHEMA_VERSION = 1
_SYNCHRONOUS = {"off", "normal", "full", "extra"}


def parse_sqlite_url(url: str) -> tuple[str, str]:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` → (path, synchronous mode)."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc or not path:
        raise ConfigurationError(f"invalid SQLite URL {url!r}: use sqlite:///path/to/file.db")
    synchronous = parse_qs(parts.query).get("synchronous", ["normal"])[0].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
    return path, synchronous


def _insert_status(tx: Tx, job_id: str, seq: int, data: dict[str, Any]) -> None:
    tx.conn.execute(Q["insert_event"], (job_id, seq, "status", tx.now, dumps(data)))
    tx.notes.add(job_key(job_id))


class SQLiteBackend:
    """The Backend protocol on one SQLite file; see the module docstring for durability."""

    def __init__(self, url: str, settings: Settings, *, lock_timeout: float = 30.0) -> None:
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
        self.settings = settings
        self.lock_timeout = lock_timeout
        self.notifier = Notifier()
        self._writer: Writer | None = None
        self._readers: Readers | None = None
        self._poller: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._create_schema)
        self._writer = Writer(
            self.path,
            synchronous=self.synchronous,
            lock_timeout=self.lock_timeout,
            on_commit=self.notifier.fire,
        )
        self._readers = Readers(self.path, threads=2, synchronous=self.synchronous)
        self._poller = asyncio.create_task(self._watch_other_processes())

    def _create_schema(self) -> None:
        conn = connect(self.path, synchronous=self.synchronous, timeout=self.lock_timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}; this longjobs knows only "
                    f"{SCHEMA_VERSION}: upgrade longjobs"
                )
            for statement in Q["schema"].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.close)
        self._writer = self._readers = self._poller = None

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("the SQLite backend is not open")
        return self._writer

    @property
    def readers(self) -> Readers:
        if self._readers is None:
            raise RuntimeError("the SQLite backend is not open")
        return self._readers

    async def _watch_other_processes(self) -> None:
        conn = connect(self.path, synchronous=self.synchronous, timeout=0.0)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(self.settings.poll_interval)
                if not self.notifier.has_waiters:
                    continue
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.OperationalError as exc:
                    if is_busy(exc):
                        continue
                    raise
                if version != last:
                    last = version
                    self.notifier.fire_all()
        finally:
            conn.close()

    # -- submitting ----------------------------------------------------------------------
    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        return await self.writer.run(lambda tx: self._create(tx, new))

    async def create_jobs(self, new: Sequence[NewJob]) -> list[Job]:
        return await self.writer.run(lambda tx: [self._create(tx, n)[0] for n in new])

    def _create(self, tx: Tx, new: NewJob) -> tuple[Job, bool]:
        if new.idempotency_key is not None:
            row = tx.conn.execute(
                Q["find_idempotent"], (new.tenant, new.idempotency_key)
            ).fetchone()
            if row is not None:
                if row["request_hash"] != new.request_hash or row["kind"] != new.kind:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request"
                    )
                return job_from_row(row), False
        tx.conn.execute(
            Q["insert_job"],
            {
                "id": new.id,
                "tenant": new.tenant,
                "kind": new.kind,
                "priority": new.priority,
                "input": dumps(new.input),
                "metadata": dumps(new.metadata),
                "max_attempts": new.max_attempts,
                "timeout_seconds": new.timeout_seconds,
                "result_ttl_seconds": new.result_ttl_seconds,
                "idempotency_key": new.idempotency_key,
                "request_hash": new.request_hash,
                "now": tx.now,
                "run_at": tx.now + max(0.0, new.delay_seconds),
            },
        )
        _insert_status(tx, new.id, 0, status_event(Status.PENDING, 0))
        tx.notes.add(WORK)
        return job_from_new(new, tx.now), True

    # -- the worker side -----------------------------------------------------------------
    async def claim_jobs(
        self, worker: str, kinds: Sequence[str], limit: int, lease_seconds: float
    ) -> list[Job]:
        if limit <= 0 or not kinds:
            return []
        params = {"worker": worker, "lease": lease_seconds, "kinds": dumps(list(kinds))}
        return await self.writer.run(lambda tx: self._claim(tx, params, limit))

    @staticmethod
    def _claim(tx: Tx, params: dict[str, Any], limit: int) -> list[Job]:
        rows = tx.conn.execute(
            Q["claim_jobs"], {**params, "now": tx.now, "limit": limit}
        ).fetchall()
        tx.conn.executemany(
            Q["insert_event"],
            [
                (
                    r["id"],
                    r["last_seq"],
                    "status",
                    tx.now,
                    dumps(status_event(Status.RUNNING, r["attempt"])),
                )
                for r in rows
            ],
        )
        tx.notes.update(job_key(r["id"]) for r in rows)
        return [job_from_row(r) for r in rows]

    async def heartbeat(self, worker: str, lease_seconds: float) -> Heartbeat:
        def op(tx: Tx) -> Heartbeat:
            rows = tx.conn.execute(
                Q["extend_leases"], {"worker": worker, "lease": lease_seconds, "now": tx.now}
            ).fetchall()
            return Heartbeat(
                held=frozenset(r["id"] for r in rows),
                cancel_requested=frozenset(r["id"] for r in rows if r["cancel_requested"]),
            )

        return await self.writer.run(op)

    async def cancel_requests(self, worker: str) -> frozenset[str]:
        def op(conn: sqlite3.Connection) -> frozenset[str]:
            rows = conn.execute(Q["cancel_requested_for"], (worker,)).fetchall()
            return frozenset(r["id"] for r in rows)

        return await self.readers.run(op)

    async def append_events(self, worker: str, updates: Sequence[JobUpdate]) -> set[str]:
        def op(tx: Tx) -> set[str]:
            return {u.job_id for u in updates if not self._apply_update(tx, worker, u)}

        return await self.writer.run(op)

    @staticmethod
    def _apply_update(tx: Tx, worker: str, update: JobUpdate) -> bool:
        row = tx.conn.execute(
            Q["report_progress"],
            {
                "n": len(update.events),
                "progress": update.progress,
                "stage": update.stage,
                "message": update.message,
                "eta_seconds": update.eta_seconds,
                "input_tokens": update.input_tokens,
                "output_tokens": update.output_tokens,
                "has_checkpoint": update.has_checkpoint,
                "checkpoint": dumps(update.checkpoint) if update.has_checkpoint else None,
                "now": tx.now,
                "id": update.job_id,
                "attempt": update.attempt,
                "worker": worker,
            },
        ).fetchone()
        if row is None:
            return False
        first = row["last_seq"] - len(update.events) + 1
        tx.conn.executemany(
            Q["insert_event"],
            [
                (update.job_id, first + i, kind, tx.now, dumps(data))
                for i, (kind, data) in enumerate(update.events)
            ],
        )
        if update.events:
            tx.notes.add(job_key(update.job_id))
        return True

    async def finish_jobs(self, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        return await self.writer.run(lambda tx: [self._finish(tx, worker, f) for f in finishes])

    def _finish(self, tx: Tx, worker: str, finish: Finish) -> bool:
        if finish.update is not None and not self._apply_update(tx, worker, finish.update):
            return False
        outcome = finish.outcome
        params: dict[str, Any] = {
            "id": finish.job_id,
            "attempt": finish.attempt,
            "worker": worker,
            "now": tx.now,
            "error": None,
            "result_size": None,
        }
        row: sqlite3.Row | None = None
        if isinstance(outcome, Failed):
            params["error"] = outcome.error.model_dump_json()
            if outcome.retry_in is not None:
                retry = {**params, "delay": outcome.retry_in}
                row = tx.conn.execute(Q["retry_job"], retry).fetchone()
                if row is not None:
                    tx.notes.add(WORK)
        if row is None:
            row = self._finish_terminal(tx, params, outcome)
        if row is None:
            return False
        error = None if row["error"] is None else JobError.model_validate_json(row["error"])
        detail = (
            {}
            if not isinstance(outcome, Failed) or outcome.retry_in is None
            else {"retry_in": outcome.retry_in}
        )
        data = status_event(
            row["status"], row["attempt"], error.model_dump() if error else None, **detail
        )
        _insert_status(tx, finish.job_id, row["last_seq"], data)
        return True

    @staticmethod
    def _finish_terminal(tx: Tx, params: dict[str, Any], outcome: Any) -> sqlite3.Row | None:
        if isinstance(outcome, Completed):
            status, params["result_size"] = Status.COMPLETED, len(outcome.body)
        else:
            status = Status.FAILED if isinstance(outcome, Failed) else Status.CANCELLED
        row: sqlite3.Row | None = tx.conn.execute(
            Q["finish_job"], {**params, "status": status.value}
        ).fetchone()
        if row is not None and isinstance(outcome, Completed):
            tx.conn.execute(Q["insert_result"], (params["id"], outcome.content_type, outcome.body))
        return row

    async def release_jobs(self, worker: str, job_ids: Sequence[str]) -> int:
        def op(tx: Tx) -> int:
            released = 0
            for job_id in job_ids:
                row = tx.conn.execute(
                    Q["release_job"], {"id": job_id, "worker": worker, "now": tx.now}
                ).fetchone()
                if row is not None:
                    data = status_event(Status.PENDING, row["attempt"], reason="released")
                    _insert_status(tx, job_id, row["last_seq"], data)
                    released += 1
            tx.notes.add(WORK)
            return released

        return await self.writer.run(op)

    # -- the client side -----------------------------------------------------------------
    async def request_cancel(self, tenant: str, job_id: str) -> Job | None:
        def op(tx: Tx) -> Job | None:
            params = {"id": job_id, "tenant": tenant, "now": tx.now}
            row = tx.conn.execute(Q["cancel_pending"], params).fetchone()
            if row is not None:
                data = status_event(Status.CANCELLED, row["attempt"])
                _insert_status(tx, job_id, row["last_seq"], data)
            else:
                row = tx.conn.execute(Q["cancel_running"], params).fetchone()
                if row is not None:
                    data = status_event(Status.RUNNING, row["attempt"], cancel_requested=True)
                    _insert_status(tx, job_id, row["last_seq"], data)
                    tx.notes.add(cancel_key(row["lease_owner"]))
            found = tx.conn.execute(Q["get_job"], (job_id, tenant)).fetchone()
            return None if found is None else job_from_row(found)

        return await self.writer.run(op)

    async def delete_job(self, tenant: str, job_id: str) -> bool:
        def op(tx: Tx) -> bool:
            if tx.conn.execute(Q["delete_job"], (job_id, tenant)).rowcount == 0:
                return False
            tx.conn.execute(Q["delete_events"], (job_id,))
            tx.conn.execute(Q["delete_result"], (job_id,))
            tx.notes.add(job_key(job_id))
            return True

        return await self.writer.run(op)

    async def get_job(self, tenant: str, job_id: str, *, with_result: bool = True) -> Job | None:
        limit = self.settings.inline_result_bytes if with_result else -1

        def op(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(Q["get_job_with_result"], (limit, job_id, tenant)).fetchone()
            return None if row is None else job_from_row(row, row["result_body"])

        return await self.readers.run(op)

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: Sequence[Status] = (),
        kind: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        clauses: list[str] = ["tenant = ?"]
        params: list[str | float] = [tenant]
        if status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params += [str(s) for s in status]
        if kind:
            clauses.append(f"kind IN ({','.join('?' * len(kind))})")
            params += list(kind)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [created_at, created_at, last_id]
        sql = (
            f"SELECT * FROM jobs WHERE {' AND '.join(clauses)} "
            f"ORDER BY created_at DESC, id DESC LIMIT {int(limit) + 1}"
        )

        def op(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(sql, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
            return Page(data=[job_from_row(r) for r in rows], next_cursor=next_cursor)

        return await self.readers.run(op)

    async def get_result(self, tenant: str, job_id: str) -> StoredResult | None:
        def op(conn: sqlite3.Connection) -> StoredResult | None:
            row = conn.execute(Q["get_result"], (job_id, tenant, time.time())).fetchone()
            return None if row is None else StoredResult(bytes(row["body"]), row["content_type"])

        return await self.readers.run(op)

    async def list_events(
        self, tenant: str, job_id: str, *, after: int = -1, limit: int = 1000
    ) -> list[Event] | None:
        def op(conn: sqlite3.Connection) -> list[Event] | None:
            if conn.execute(Q["job_exists"], (job_id, tenant)).fetchone() is None:
                return None
            rows = conn.execute(Q["list_events"], (job_id, after, limit)).fetchall()
            return [event_from_row(job_id, r) for r in rows]

        return await self.readers.run(op)

    # -- maintenance ---------------------------------------------------------------------
    async def sweep(self) -> Sweep:
        return await self.writer.run(self._sweep)

    def _sweep(self, tx: Tx) -> Sweep:
        counts = {Status.PENDING: 0, Status.FAILED: 0, Status.CANCELLED: 0}
        for row in tx.conn.execute(Q["expired_leases"], (tx.now,)).fetchall():
            status, error = Status.PENDING, None
            if row["cancel_requested"]:
                status = Status.CANCELLED
            elif row["attempt"] >= row["max_attempts"]:
                status = Status.FAILED
                error = JobError(
                    type="attempts_exhausted",
                    message=f"the worker running attempt {row['attempt']} of "
                    f"{row['max_attempts']} stopped heartbeating",
                    retryable=False,
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
                data = status_event(
                    status,
                    row["attempt"],
                    error.model_dump() if error else None,
                    reason="lease_expired",
                )
                _insert_status(tx, row["id"], ended["last_seq"], data)
        if counts[Status.PENDING]:
            tx.notes.add(WORK)
        expired = tx.conn.execute(Q["expire_results"], (tx.now,)).rowcount
        tx.conn.execute(Q["mark_results_expired"], (tx.now,))
        return Sweep(
            requeued=counts[Status.PENDING],
            failed=counts[Status.FAILED],
            cancelled=counts[Status.CANCELLED],
            results_expired=max(expired, 0),
        )

    # -- waiting -------------------------------------------------------------------------
    def watch_work(self, kinds: Sequence[str]) -> _DueWorkWatch:
        return _DueWorkWatch(self, dumps(list(kinds)))

    def watch_job(self, job_id: str | None) -> Watch:
        return self.notifier.watch(ANY_JOB if job_id is None else job_key(job_id))

    def watch_cancel(self, worker: str) -> Watch:
        return self.notifier.watch(cancel_key(worker))

    async def has_due_work(self, kinds_json: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(Q["has_due_work"], (time.time(), kinds_json)).fetchone() is not None

        return await self.readers.run(op)


class _DueWorkWatch:
    """Wakes on local submissions at once; a write by another process wakes it only when a job
    of these kinds is due (checked with a read, so idle workers never take the write lock)."""

    def __init__(self, backend: SQLiteBackend, kinds_json: str) -> None:
        self._backend = backend
        self._kinds_json = kinds_json
        self._watch = backend.notifier.watch(WORK)

    async def wait(self, timeout: float) -> Wake | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            woken = await self._watch.wait(remaining)
            if woken != "external":
                return woken
            self._watch.rearm()
            if await self._backend.has_due_work(self._kinds_json):
                return woken
        return None

    def close(self) -> None:
        self._watch.close()
