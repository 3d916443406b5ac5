"""The embedded default: jobs in one SQLite file (WAL), shared by any number of local processes.

Durability: WAL with ``synchronous=NORMAL`` by default, which survives a crash of any process
(kill -9) but may lose the last commits on power loss; add ``?synchronous=full`` to the URL to make
every commit survive power loss too. Processes on one file notice each other's writes through
``PRAGMA data_version`` of the writer's connection, read after each commit and every
``poll_interval`` when idle (so within ``poll_interval``); within a process, waiters
are woken as soon as the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from typing import Any

from longjobs.backends.base import (
    ApiKey,
    Change,
    Completed,
    Finish,
    Heartbeat,
    JobUpdate,
    KindUsage,
    NewJob,
    ResultStream,
    StoredResult,
    Sweep,
)
from longjobs.backends.notify import (
    ANY_JOB,
    WORK,
    DueWorkWatch,
    Notifier,
    Subscription,
    Watch,
    cancel_key,
    job_key,
)
from longjobs.backends.outbox import RESPONSE_KIND, event_type
from longjobs.backends.rows import (
    ATTEMPT,
    ID,
    JOB_SELECT,
    LAST_SEQ,
    NUM,
    decode_change,
    decode_cursor,
    dumps,
    encode_change,
    encode_cursor,
    event_from_row,
    job_from_new,
    job_from_row,
    status_event,
)
from longjobs.backends.settle import settle, update_rounds
from longjobs.backends.sqlite_db import Readers, Tx, Writer
from longjobs.backends.sqlite_sql import (
    PENDING_EVENT,
    SCHEMA_VERSION,
    Q,
    create_schema,
    insert_status,
    job_rows,
    lock_timeout_of,
    parse_sqlite_url,
    record_outbox,
    running_event,
    sweep_expired,
)
from longjobs.backends.sqlite_stats import SQLiteStats
from longjobs.backends.sqlite_tail import ForeignTail
from longjobs.backends.sqlite_webhooks import SQLiteWebhooks
from longjobs.errors import (
    IdempotencyConflict,
    StorageError,
    StorageUnavailable,
)
from longjobs.models import Event, Job, Page, Status
from longjobs.settings import Settings

__all__ = ["SCHEMA_VERSION", "SQLiteBackend", "parse_sqlite_url"]

_INLINE_BATCH = 16  # larger bulk writes go to the writer thread, not the event loop
_INLINE_EVENTS = 64  # pages of events up to this size are read on the event loop


class SQLiteBackend(SQLiteWebhooks, SQLiteStats):
    """The Backend protocol on one SQLite file; see the module docstring for durability."""

    def __init__(self, url: str, settings: Settings, *, lock_timeout: float = 30.0) -> None:
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
        self.settings = settings
        self.lock_timeout = lock_timeout_of(url, lock_timeout)
        self.notifier = Notifier()
        self._writer: Writer | None = None
        self._readers: Readers | None = None
        self._tail = ForeignTail(self.notifier)
        self._tail_reading = self._tail_again = False
        self._tail_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await asyncio.to_thread(create_schema, self.path, self.synchronous, self.lock_timeout)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open SQLite database {self.path}: {exc}") from None
        loop = asyncio.get_running_loop()

        def on_foreign_commit() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._foreign_commit)

        self._writer = Writer(
            self.path,
            synchronous=self.synchronous,
            lock_timeout=self.lock_timeout,
            on_commit=self.notifier.fire,
            on_foreign_commit=on_foreign_commit,
            poll_interval=self.settings.poll_interval,
        )
        self._readers = Readers(self.path, threads=2, synchronous=self.synchronous)
        await self._readers.run(self._tail.begin)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.close)
        self._writer = self._readers = None

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

    def _foreign_commit(self) -> None:
        """Another process committed. Followers of jobs learn what changed from one read on
        this thread (``ForeignTail``): reading it on the writer thread, which takes the GIL
        back after every row, would make each row wait for the busy event loop."""
        if not self.notifier.has_waiters:
            return
        if not self.notifier.follows_jobs:
            self.notifier.fire_foreign([])
        elif self._tail_reading:
            self._tail_again = True
        else:
            self._tail_reading = True
            task = asyncio.ensure_future(self._read_tail())
            self._tail_tasks.add(task)
            task.add_done_callback(self._tail_tasks.discard)

    async def _read_tail(self) -> None:
        try:
            while True:
                self._tail_again = False
                try:
                    changes = await self.readers.run_point(self._tail.changes)
                except StorageError:
                    changes = None
                if changes is None:
                    self.notifier.fire_all()
                else:
                    self.notifier.fire_foreign(changes.keys, changes.events)
                if not self._tail_again:
                    return
        finally:
            self._tail_reading = False

    # -- submitting ----------------------------------------------------------------------
    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        return await self.writer.run(lambda tx: self._create(tx, new))

    async def create_jobs(self, new: Sequence[NewJob]) -> list[Job]:
        op = lambda tx: [self._create(tx, n)[0] for n in new]  # noqa: E731 - a one-line op
        return await self.writer.run(op, inline=len(new) <= _INLINE_BATCH)

    def _create(self, tx: Tx, new: NewJob) -> tuple[Job, bool]:
        if new.idempotency_key is not None:
            rows = job_rows(tx.conn, Q["find_idempotent"], (new.tenant, new.idempotency_key))
            if rows:
                found = tx.conn.execute(Q["request_hash"], (rows[0][NUM],)).fetchone()
                if found["request_hash"] != new.request_hash or found["kind"] != new.kind:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request"
                    )
                return job_from_row(rows[0]), False
        num = tx.conn.execute(
            Q["insert_job"],
            {
                "id": new.id,
                "tenant": new.tenant,
                "kind": new.kind,
                "priority": new.priority,
                "input": dumps(new.input),
                "metadata": dumps(new.metadata) if new.metadata else "{}",
                "max_attempts": new.max_attempts,
                "timeout_seconds": new.timeout_seconds,
                "result_ttl_seconds": new.result_ttl_seconds,
                "idempotency_key": new.idempotency_key,
                "request_hash": new.request_hash,
                "webhook_url": new.webhook_url,
                "now": tx.now,
                "run_at": tx.now + max(0.0, new.delay_seconds),
            },
        ).fetchone()[0]
        insert_status(tx, (num, new.id), 0, PENDING_EVENT)
        tx.notes.add(WORK)
        return job_from_new(new, tx.now), True

    # -- the worker side -----------------------------------------------------------------
    async def claim_jobs(
        self, worker: str, kinds: Sequence[str], limit: int, lease_seconds: float
    ) -> list[Job]:
        if limit <= 0 or not kinds:
            return []
        params = {"worker": worker, "lease": lease_seconds, "kinds": dumps(list(kinds))}
        rows = await self.writer.run(lambda tx: self._claim(tx, params, limit))
        return [job_from_row(r) for r in rows]  # outside the transaction: the lock is shared

    @staticmethod
    def _claim(tx: Tx, params: dict[str, Any], limit: int) -> list[tuple[Any, ...]]:
        rows = job_rows(tx.conn, Q["claim_jobs"], {**params, "now": tx.now, "limit": limit})
        tx.conn.executemany(
            Q["insert_event"],
            [(r[NUM], r[LAST_SEQ], "status", tx.now, running_event(r[ATTEMPT])) for r in rows],
        )
        for r in rows:
            tx.wrote(job_key(r[ID]))
        return rows

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        params = {"worker": worker, "lease": lease_seconds, "ids": dumps(list(job_ids))}

        def op(tx: Tx) -> Heartbeat:
            rows = tx.conn.execute(Q["extend_leases"], {**params, "now": tx.now}).fetchall()
            return Heartbeat(
                held=frozenset(r["id"] for r in rows),
                cancel_requested=frozenset(r["id"] for r in rows if r["cancel_requested"]),
            )

        return await self.writer.run(op)

    async def cancel_requests(self, worker: str) -> frozenset[str]:
        def op(conn: sqlite3.Connection) -> frozenset[str]:
            rows = conn.execute(Q["cancel_requested_for"], (worker,)).fetchall()
            return frozenset(r["id"] for r in rows)

        return await self.readers.run_point(op)

    async def append_events(self, worker: str, updates: Sequence[JobUpdate]) -> set[str]:
        def op(tx: Tx) -> set[str]:
            applied = self._apply_updates(tx, worker, updates)
            return {u.job_id for u in updates if u.job_id not in applied}

        # No savepoint per update is needed: Context checks that reports are JSON, so an update
        # fails only by fencing, which changes nothing.

        return await self.writer.run(op, inline=len(updates) <= _INLINE_BATCH)

    def _apply_updates(
        self, tx: Tx, worker: str, updates: Sequence[JobUpdate]
    ) -> dict[str, tuple[int, float]]:
        """Apply fenced updates: ``{job_id: (last_seq, progress)}`` after them, for those whose
        lease still holds. Several updates of one job are applied in order, one round each."""
        applied: dict[str, tuple[int, float]] = {}
        for round_ in update_rounds(updates):
            applied.update(self._apply_round(tx, worker, round_))
        return applied

    def _apply_round(
        self, tx: Tx, worker: str, updates: list[JobUpdate]
    ) -> dict[str, tuple[int, float]]:
        """One statement updates every job (at most one update each), one more appends all
        their events; what a follower in this process watches is handed over too."""
        conn = tx.conn
        conn.execute(Q["create_job_updates"])
        conn.execute(Q["clear_job_updates"])
        conn.executemany(
            Q["insert_job_update"],
            [
                (u.job_id, u.attempt, len(u.events), u.progress, u.stage, u.message,
                 u.eta_seconds, u.input_tokens, u.output_tokens, u.has_checkpoint,
                 dumps(u.checkpoint) if u.has_checkpoint else None)
                for u in updates
            ],
        )  # fmt: skip
        by_id = {u.job_id: u for u in updates}
        rows = job_rows(conn, Q["report_progress_batch"], {"now": tx.now, "worker": worker})
        applied: dict[str, tuple[int, float]] = {}
        events: list[tuple[int, int, str, float, str]] = []
        at: datetime | None = None
        for job_id, num, last_seq, progress in rows:
            applied[job_id] = (last_seq, progress)
            update = by_id[job_id]
            if not update.events:
                continue
            first = last_seq - len(update.events) + 1
            events += [
                (num, first + i, kind, tx.now, dumps(data))
                for i, (kind, data) in enumerate(update.events)
            ]
            key = job_key(job_id)
            tx.notes.add(key)
            if self.notifier.subscribed(key):  # followed here: hand the events over as well
                at = at or datetime.fromtimestamp(tx.now, UTC)
                tx.published[key] = [
                    Event(job_id, first + i, kind, at, data)
                    for i, (kind, data) in enumerate(update.events)
                ]
        conn.executemany(Q["insert_event"], events)
        return applied

    async def finish_jobs(self, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        op = lambda tx: self._finish_all(tx, worker, finishes)  # noqa: E731 - a one-line op
        return await self.writer.run(op, inline=len(finishes) <= _INLINE_BATCH)

    def _finish_all(self, tx: Tx, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        """Fence every finish with one read, then write them all with ``executemany``."""
        ids = dumps([f.job_id for f in finishes])
        held = {r["id"]: r for r in tx.conn.execute(Q["held_for_finish"], (worker, ids))}
        rows: list[sqlite3.Row | None] = []
        for finish in finishes:
            row = held.pop(finish.job_id, None)  # a second finish in one batch is stale
            rows.append(row if row is not None and row["attempt"] == finish.attempt else None)
        updated = self._apply_updates(
            tx,
            worker,
            [f.update for f, row in zip(finishes, rows, strict=True) if row and f.update],
        )
        accepted, settled, events, apart, ended = [], [], [], [], []
        types: dict[int, str] = {}  # a response's event type depends on its result
        for finish, row in zip(finishes, rows, strict=True):
            if row is None:
                accepted.append(False)
                continue
            last_seq, progress = updated.get(finish.job_id, (row["last_seq"], row["progress"]))
            accepted.append(True)
            s = settle(
                finish.outcome,
                attempt=row["attempt"],
                cancel_requested=bool(row["cancel_requested"]),
                progress=progress,
                run_at=row["run_at"],
                result_ttl=row["result_ttl_seconds"],
                now=tx.now,
                inline_limit=self.settings.inline_result_bytes,
            )
            num, seq = row["num"], last_seq + 1
            settled.append(
                (s.status.value, s.error, s.progress, s.eta_seconds, s.result, s.result_size,
                 s.expires_at, s.finished_at, s.run_at, seq, tx.now, num)
            )  # fmt: skip
            events.append((num, seq, "status", tx.now, s.event))
            if s.result_apart is not None:
                apart.append((num, s.content_type, s.result_apart))
            tx.wrote(job_key(finish.job_id))
            if s.status is Status.PENDING:
                tx.notes.add(WORK)
            else:
                ended.append(num)
                if row["kind"] == RESPONSE_KIND and isinstance(finish.outcome, Completed):
                    types[num] = event_type(row["kind"], s.status.value, finish.outcome.body)
        tx.conn.executemany(Q["settle_job"], settled)
        tx.conn.executemany(Q["insert_event"], events)
        tx.conn.executemany(Q["insert_result"], apart)
        record_outbox(tx, ended, types)
        return accepted

    async def release_jobs(self, worker: str, job_ids: Sequence[str]) -> int:
        def op(tx: Tx) -> int:
            released = 0
            for job_id in job_ids:
                row = tx.conn.execute(
                    Q["release_job"], {"id": job_id, "worker": worker, "now": tx.now}
                ).fetchone()
                if row is not None:
                    data = status_event(row["status"], row["attempt"], reason="released")
                    insert_status(tx, (row["num"], job_id), row["last_seq"], data)
                    released += 1
                    if row["status"] == "cancelled":  # a cancel request was waiting
                        record_outbox(tx, [row["num"]])
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
                insert_status(tx, (row["num"], job_id), row["last_seq"], data)
                record_outbox(tx, [row["num"]])
            else:
                row = tx.conn.execute(Q["cancel_running"], params).fetchone()
                if row is not None:
                    data = status_event(Status.RUNNING, row["attempt"], cancel_requested=True)
                    insert_status(tx, (row["num"], job_id), row["last_seq"], data)
                    tx.notes.add(cancel_key(row["lease_owner"]))
            found = job_rows(tx.conn, Q["get_job"], (job_id, tenant))
            return job_from_row(found[0]) if found else None

        return await self.writer.run(op)

    async def delete_job(self, tenant: str, job_id: str) -> bool:
        def op(tx: Tx) -> bool:
            tx.conn.execute(Q["raise_feed_floor"])
            row = tx.conn.execute(Q["delete_job"], (job_id, tenant)).fetchone()
            if row is None:
                return False
            tx.conn.execute(Q["delete_events"], (row["num"],))
            tx.conn.execute(Q["delete_result"], (row["num"],))
            tx.wrote(job_key(job_id))
            return True

        return await self.writer.run(op)

    async def get_job(self, tenant: str, job_id: str, *, with_result: bool = True) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            rows = job_rows(conn, Q["get_job"], (job_id, tenant))
            return job_from_row(rows[0], with_result=with_result) if rows else None

        return await self.readers.run_point(op)

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
        params: list[str | int] = [tenant]
        if status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params += [str(s) for s in status]
        if kind:
            clauses.append(f"kind IN ({','.join('?' * len(kind))})")
            params += list(kind)
        if cursor is not None:
            clauses.append("num < ?")
            params.append(decode_cursor(cursor))
        sql = (
            f"SELECT {JOB_SELECT} FROM jobs WHERE {' AND '.join(clauses)} "
            f"ORDER BY num DESC LIMIT {max(0, int(limit)) + 1}"
        )

        def op(conn: sqlite3.Connection) -> Page:
            rows = job_rows(conn, sql, params)
            more = len(rows) > limit
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1][NUM]) if more and rows else None
            data = [job_from_row(r, with_result=False) for r in rows]
            return Page(data=data, next_cursor=next_cursor)

        return await self.readers.run(op)

    async def get_result(self, tenant: str, job_id: str) -> StoredResult | None:
        def op(conn: sqlite3.Connection) -> StoredResult | None:
            row = conn.execute(Q["get_result"], (job_id, tenant, time.time())).fetchone()
            if row is None or row["body"] is None:
                return None
            body = row["body"]
            data = body.encode() if isinstance(body, str) else bytes(body)
            return StoredResult(data, row["content_type"])

        return await self.readers.run(op)

    async def stream_result(
        self, tenant: str, job_id: str, *, chunk_size: int = 256 * 1024
    ) -> ResultStream | None:
        def locate(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(
                Q["locate_result"], (job_id, tenant, time.time())
            ).fetchone()
            return row

        row = await self.readers.run(locate)
        if row is None or (row["inline"] is None and row["num"] is None):
            return None
        if row["inline"] is not None:
            body = str(row["inline"]).encode()
            return ResultStream.whole(body)
        num, size = int(row["num"]), int(row["size"])

        async def chunks() -> AsyncGenerator[bytes, None]:
            for offset in range(0, size, chunk_size):
                yield await self.readers.run(
                    functools.partial(_read_blob, num=num, offset=offset, size=chunk_size)
                )

        return ResultStream(str(row["content_type"]), size, chunks())

    async def list_events(
        self, tenant: str, job_id: str, *, after: int = -1, limit: int = 1000
    ) -> list[Event] | None:
        if not -1 <= after < 2**63 - 1:
            raise ValueError("after must be a sequence number")

        def op(conn: sqlite3.Connection) -> list[Event] | None:
            rows = conn.execute(Q["list_events"], (job_id, tenant, after, limit)).fetchall()
            if not rows and conn.execute(Q["job_exists"], (job_id, tenant)).fetchone() is None:
                return None
            return [event_from_row(job_id, r) for r in rows]

        if limit <= _INLINE_EVENTS:  # a live follower's read: cheaper than the hop to a thread
            return await self.readers.run_point(op)
        return await self.readers.run(op)

    async def changed_jobs(
        self, tenant: str, after: str | None, *, limit: int = 100
    ) -> tuple[list[Change], str]:
        position = None if after is None else decode_change(after)

        def op(conn: sqlite3.Connection) -> tuple[list[Change], str]:
            # The head and the rows from one snapshot: every change up to the head is committed
            # in it (one writer at a time: an unfinished transaction's numbers are above it).
            conn.execute("BEGIN")
            try:
                head = int(conn.execute(Q["change_head"]).fetchone()[0])
                if position is None:
                    return [], encode_change(head, 2**62)
                change, num = position
                wanted = max(1, limit)
                params = {"tenant": tenant, "change": change, "num": num, "head": head}
                rows = job_rows(conn, Q["changed_jobs"], {**params, "limit": wanted})
            finally:
                conn.execute("COMMIT")
            changes = [
                Change(encode_change(row[-1], row[NUM]), job_from_row(row[:-1], with_result=False))
                for row in rows
            ]
            if len(changes) < wanted and head > change:
                # All of the tenant's changes up to the head are read: the next read starts at
                # the head, not again among other tenants' changes since the last of its own.
                return changes, encode_change(head, 2**62)
            return changes, changes[-1].cursor if changes else after or ""

        return await self.readers.run(op)

    async def job_counts(self) -> dict[tuple[str, str], int]:
        def op(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(Q["job_counts"]).fetchall()
            return {(row["status"], row["kind"]): int(row["n"]) for row in rows}

        return await self.readers.run(op)

    async def usage_by_kind(self, tenant: str) -> dict[str, KindUsage]:
        def op(conn: sqlite3.Connection) -> dict[str, KindUsage]:
            rows = conn.execute(Q["usage_by_kind"], (tenant,)).fetchall()
            return {row["kind"]: KindUsage(row["n"], row["i"], row["o"]) for row in rows}

        return await self.readers.run(op)

    async def count_pending(self, tenant: str, *, limit: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["count_pending"], (tenant, limit)).fetchone()[0])

        return await self.readers.run(op)

    # -- API keys ------------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        row = (key.id, key.tenant, key.name, key_hash, key.created_at)
        await self.writer.run(lambda tx: tx.conn.execute(Q["insert_api_key"], row).rowcount)

    async def revoke_api_key(self, key_id: str) -> bool:
        def op(tx: Tx) -> bool:
            return tx.conn.execute(Q["revoke_api_key"], (tx.now, key_id)).rowcount == 1

        return await self.writer.run(op)

    async def list_api_keys(self) -> list[ApiKey]:
        def op(conn: sqlite3.Connection) -> list[ApiKey]:
            return [ApiKey(**dict(row)) for row in conn.execute(Q["list_api_keys"])]

        return await self.readers.run(op)

    async def authenticate(self, key_hash: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(Q["authenticate"], (key_hash,)).fetchone()
            return None if row is None else str(row["tenant"])

        return await self.readers.run_point(op)

    async def has_api_keys(self) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(Q["has_api_keys"]).fetchone()[0])

        return await self.readers.run_point(op)

    # -- maintenance ---------------------------------------------------------------------
    async def sweep(self) -> Sweep:
        return await self.writer.run(sweep_expired, inline=False)

    # -- waiting -------------------------------------------------------------------------
    def watch_work(self, kinds: Sequence[str]) -> DueWorkWatch:
        kinds_json = dumps(list(kinds))
        return DueWorkWatch(self.notifier, lambda: self.has_due_work(kinds_json))

    def watch_job(self, job_id: str | None) -> Watch:
        return self.notifier.watch(ANY_JOB if job_id is None else job_key(job_id))

    def subscribe_job(self, job_id: str) -> Subscription:
        return self.notifier.subscription(job_key(job_id))

    def watch_cancel(self, worker: str) -> Watch:
        return self.notifier.watch(cancel_key(worker))

    async def has_due_work(self, kinds_json: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(Q["has_due_work"], (time.time(), kinds_json)).fetchone() is not None

        return await self.readers.run_point(op)


def _read_blob(conn: sqlite3.Connection, num: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of result ``num``, read in place (SQLite's incremental
    BLOB I/O); StorageError if the result was removed (expired, or its job deleted)."""
    try:
        with conn.blobopen("results", "body", num, readonly=True) as blob:
            blob.seek(offset)
            return blob.read(size)
    except sqlite3.OperationalError as exc:
        raise StorageError(f"the result went away while it was read: {exc}") from None
