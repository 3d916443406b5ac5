"""Jobs in PostgreSQL: any number of API servers and workers on any number of machines.

``postgresql://user:password@host:5432/dbname`` (also ``postgres://``). Claims take due jobs
with ``FOR UPDATE SKIP LOCKED`` in batches, leases run on the database's clock, every write of
a running job is fenced by its lease (worker and attempt), and expired leases are reclaimed by
whichever process sweeps first. LISTEN/NOTIFY wakes idle workers the moment work is submitted,
tells every API server which jobs changed (their event streams read at once) and delivers a
cancel request to the worker holding the job without waiting for its heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
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
from longjobs.backends.outbox import RESPONSE_KIND, RETENTION_SECONDS, event_type
from longjobs.backends.postgres_db import SCHEMA_VERSION, Conn, Database, Q, Tx, storable, text
from longjobs.backends.postgres_stats import PostgresStats
from longjobs.backends.postgres_webhooks import PostgresWebhooks, record_outbox
from longjobs.backends.rows import (
    JOB_SELECT,
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
from longjobs.backends.settle import lease_expired, lease_expired_event, settle, update_rounds
from longjobs.errors import IdempotencyConflict, StorageError
from longjobs.models import Event, Job, Page, Status
from longjobs.settings import Settings

__all__ = ["SCHEMA_VERSION", "PostgresBackend"]

_HELD_BACK_RECHECK = 0.05  # how soon the change feed looks again at changes held back


class PostgresBackend(PostgresWebhooks, PostgresStats):
    """The Backend protocol on PostgreSQL; see the module docstring."""

    def __init__(self, url: str, settings: Settings, *, pool_size: int = 10) -> None:
        self.url = url
        self.settings = settings
        self.notifier = Notifier()
        dsn = "postgresql://" + url.split("://", 1)[1]
        self.db = Database(dsn, self.notifier, pool_size=pool_size)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- submitting ----------------------------------------------------------------------
    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        return await self.db.write(lambda tx: self._create(tx, new))

    async def create_jobs(self, new: Sequence[NewJob]) -> list[Job]:
        async def op(tx: Tx) -> list[Job]:
            return [(await self._create(tx, n))[0] for n in new]

        return await self.db.write(op)

    async def _create(self, tx: Tx, new: NewJob) -> tuple[Job, bool]:
        conn = tx.conn
        while True:
            row = await conn.fetchrow(
                Q["insert_job"],
                new.id, new.tenant, new.kind, new.priority, dumps(new.input),
                dumps(new.metadata) if new.metadata else "{}", new.max_attempts,
                new.timeout_seconds, new.result_ttl_seconds, new.idempotency_key,
                new.request_hash, max(0.0, new.delay_seconds), new.webhook_url,
            )  # fmt: skip
            if row is not None:
                await conn.execute(Q["insert_event"], row["num"], 0, "status", _PENDING)
                tx.notes.update((WORK, job_key(new.id)))
                return job_from_new(new, row["created_at"]), True
            found = await conn.fetchrow(Q["find_idempotent"], new.tenant, new.idempotency_key)
            if found is None:
                continue  # the other submission was rolled back: ours goes in after all
            if found["request_hash"] != new.request_hash or found["kind"] != new.kind:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different request"
                )
            return job_from_row(tuple(found)[:-1]), False

    # -- the worker side -----------------------------------------------------------------
    async def claim_jobs(
        self, worker: str, kinds: Sequence[str], limit: int, lease_seconds: float
    ) -> list[Job]:
        if limit <= 0 or not kinds:
            return []

        async def op(tx: Tx) -> list[Job]:
            rows = await tx.conn.fetch(Q["claim_jobs"], worker, list(kinds), limit, lease_seconds)
            tx.notes.update(job_key(r["id"]) for r in rows)
            return [job_from_row(tuple(r)) for r in rows]

        return await self.db.write(op)

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        rows = await self.db.fetch(Q["extend_leases"], worker, lease_seconds, list(job_ids))
        return Heartbeat(
            held=frozenset(r["id"] for r in rows),
            cancel_requested=frozenset(r["id"] for r in rows if r["cancel_requested"]),
        )

    async def cancel_requests(self, worker: str) -> frozenset[str]:
        rows = await self.db.fetch(Q["cancel_requested_for"], worker)
        return frozenset(r["id"] for r in rows)

    async def append_events(self, worker: str, updates: Sequence[JobUpdate]) -> set[str]:
        async def op(tx: Tx) -> set[str]:
            applied = await _apply_updates(tx, worker, updates)
            return {u.job_id for u in updates if u.job_id not in applied}

        return await self.db.write(op)

    async def finish_jobs(self, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        return await self.db.write(lambda tx: self._finish_all(tx, worker, finishes))

    async def _finish_all(self, tx: Tx, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        conn = tx.conn
        ids = [f.job_id for f in finishes]
        held = {r["id"]: r for r in await conn.fetch(Q["held_for_finish"], worker, ids)}
        rows: list[Any] = []
        for finish in finishes:
            row = held.pop(finish.job_id, None)  # a second finish in one batch is stale
            rows.append(row if row is not None and row["attempt"] == finish.attempt else None)
        updated = await _apply_updates(
            tx, worker, [f.update for f, r in zip(finishes, rows, strict=True) if r and f.update]
        )
        now = float(await conn.fetchval(Q["now"]))
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
                now=now,
                inline_limit=self.settings.inline_result_bytes,
            )
            num, seq = row["num"], last_seq + 1
            settled.append(
                (s.status.value, s.error, s.progress, s.eta_seconds, s.result, s.result_size,
                 s.expires_at, s.finished_at, s.run_at, seq, num)
            )  # fmt: skip
            events.append((num, seq, "status", s.event))
            if s.result_apart is not None:
                apart.append((num, s.content_type, s.result_apart))
            tx.notes.add(job_key(finish.job_id))
            if s.status is Status.PENDING:
                tx.notes.add(WORK)
            else:
                ended.append(num)
                if row["kind"] == RESPONSE_KIND and isinstance(finish.outcome, Completed):
                    types[num] = event_type(row["kind"], s.status.value, finish.outcome.body)
        if settled:
            await conn.execute(Q["settle_jobs"], *(list(c) for c in zip(*settled, strict=True)))
            await _insert_events(conn, events)
            await record_outbox(tx, ended, types)
        if apart:
            await conn.executemany(Q["insert_result"], apart)
        return accepted

    async def release_jobs(self, worker: str, job_ids: Sequence[str]) -> int:
        async def op(tx: Tx) -> int:
            released = 0
            for job_id in sorted(job_ids):  # row locks in id order, as everywhere
                row = await tx.conn.fetchrow(Q["release_job"], job_id, worker)
                if row is not None:
                    data = status_event(row["status"], row["attempt"], reason="released")
                    await _insert_status(tx, row["num"], job_id, row["last_seq"], data)
                    released += 1
                    if row["status"] == "cancelled":  # a cancel request was waiting
                        await record_outbox(tx, [row["num"]])
            tx.notes.add(WORK)
            return released

        return await self.db.write(op)

    # -- the client side -----------------------------------------------------------------
    async def request_cancel(self, tenant: str, job_id: str) -> Job | None:
        if not storable(job_id):
            return None

        async def op(tx: Tx) -> Job | None:
            conn = tx.conn
            if await conn.fetchval(Q["lock_job"], job_id, tenant) is None:
                return None
            row = await conn.fetchrow(Q["cancel_pending"], job_id, tenant)
            if row is not None:
                data = status_event(Status.CANCELLED, row["attempt"])
                await _insert_status(tx, row["num"], job_id, row["last_seq"], data)
                await record_outbox(tx, [row["num"]])
            else:
                row = await conn.fetchrow(Q["cancel_running"], job_id, tenant)
                if row is not None:
                    data = status_event(Status.RUNNING, row["attempt"], cancel_requested=True)
                    await _insert_status(tx, row["num"], job_id, row["last_seq"], data)
                    tx.notes.add(cancel_key(row["lease_owner"]))
            found = await conn.fetchrow(Q["get_job"], job_id, tenant)
            return None if found is None else job_from_row(tuple(found))

        return await self.db.write(op)

    async def delete_job(self, tenant: str, job_id: str) -> bool:
        if not storable(job_id):
            return False

        async def op(tx: Tx) -> bool:
            num = await tx.conn.fetchval(Q["delete_job"], job_id, tenant)
            if num is None:
                return False
            tx.notes.add(job_key(job_id))
            return True

        return await self.db.write(op)

    async def get_job(self, tenant: str, job_id: str, *, with_result: bool = True) -> Job | None:
        if not storable(job_id):
            return None
        row = await self.db.fetchrow(Q["get_job"], job_id, tenant)
        return None if row is None else job_from_row(tuple(row), with_result=with_result)

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: Sequence[Status] = (),
        kind: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        clauses: list[str] = ["tenant = $1"]
        params: list[Any] = [tenant]
        if status:
            params.append([str(s) for s in status])
            clauses.append(f"status = ANY(${len(params)}::text[])")
        if kind:
            if not all(map(storable, kind)):
                return Page(data=[])  # no kind has such a name
            params.append(list(kind))
            clauses.append(f"kind = ANY(${len(params)}::text[])")
        if cursor is not None:
            params.append(decode_cursor(cursor))
            clauses.append(f"num < ${len(params)}")
        limit = max(0, int(limit))
        sql = (
            f"SELECT {JOB_SELECT} FROM jobs WHERE {' AND '.join(clauses)} "
            f"ORDER BY num DESC LIMIT {limit + 1}"
        )
        rows = await self.db.fetch(sql, *params)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["num"]) if more and rows else None
        return Page(
            data=[job_from_row(tuple(r), with_result=False) for r in rows], next_cursor=next_cursor
        )

    async def get_result(self, tenant: str, job_id: str) -> StoredResult | None:
        if not storable(job_id):
            return None
        row = await self.db.fetchrow(Q["get_result"], job_id, tenant)
        if row is None or row["body"] is None:
            return None
        return StoredResult(bytes(row["body"]), row["content_type"])

    async def stream_result(
        self, tenant: str, job_id: str, *, chunk_size: int = 256 * 1024
    ) -> ResultStream | None:
        if not storable(job_id):
            return None
        row = await self.db.fetchrow(Q["locate_result"], job_id, tenant)
        if row is None or (row["inline"] is None and row["num"] is None):
            return None
        if row["inline"] is not None:
            body = str(row["inline"]).encode()
            return ResultStream.whole(body)
        num, size = int(row["num"]), int(row["size"])

        async def chunks() -> AsyncGenerator[bytes, None]:
            for offset in range(0, size, chunk_size):
                chunk = await self.db.fetchval(Q["result_chunk"], num, offset + 1, chunk_size)
                if chunk is None:
                    raise StorageError("the result went away while it was read")
                yield bytes(chunk)

        return ResultStream(str(row["content_type"]), size, chunks())

    async def list_events(
        self, tenant: str, job_id: str, *, after: int = -1, limit: int = 1000
    ) -> list[Event] | None:
        if not -1 <= after < 2**63 - 1:
            raise ValueError("after must be a sequence number")
        if not storable(job_id):
            return None

        async def op(conn: Conn) -> list[Event] | None:
            rows = await conn.fetch(Q["list_events"], job_id, tenant, after, limit)
            if not rows and await conn.fetchval(Q["job_exists"], job_id, tenant) is None:
                return None
            return [event_from_row(job_id, r) for r in rows]

        return await self.db.read(op)

    async def changed_jobs(
        self, tenant: str, after: str | None, *, limit: int = 100
    ) -> tuple[list[Change], str]:
        position = None if after is None else decode_change(after)

        async def op(conn: Conn) -> tuple[list[Change], str]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                horizon = int(await conn.fetchval(Q["change_horizon"]))
                if position is None:
                    return [], encode_change(horizon, 0)
                xid, seq = position
                wanted = max(1, limit)
                rows = await conn.fetch(Q["changed_jobs"], tenant, str(xid), seq, wanted)
                if await conn.fetchval(Q["changes_held_back"], tenant, str(xid), seq):
                    # Committed, but behind a transaction still open: no notification will
                    # come when that one ends, so look again shortly.
                    asyncio.get_running_loop().call_later(
                        _HELD_BACK_RECHECK, self.notifier.fire, [ANY_JOB]
                    )
            changes = [
                Change(encode_change(r[-2], r[-1]), job_from_row(tuple(r)[:-2], with_result=False))
                for r in rows
            ]
            if len(changes) < wanted and (horizon, 0) > (xid, seq):
                # Every change of the tenant below the horizon is read: start there next time.
                return changes, encode_change(horizon, 0)
            return changes, changes[-1].cursor if changes else after or ""

        return await self.db.read(op)

    async def job_counts(self) -> dict[tuple[str, str], int]:
        rows = await self.db.fetch(Q["job_counts"])
        return {(r["status"], r["kind"]): int(r["n"]) for r in rows}

    async def usage_by_kind(self, tenant: str) -> dict[str, KindUsage]:
        rows = await self.db.fetch(Q["usage_by_kind"], tenant)
        return {r["kind"]: KindUsage(int(r["n"]), int(r["i"]), int(r["o"])) for r in rows}

    async def count_pending(self, tenant: str, *, limit: int) -> int:
        return int(await self.db.fetchval(Q["count_pending"], tenant, limit))

    # -- API keys ------------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        async def op(tx: Tx) -> None:
            await tx.conn.execute(
                Q["insert_api_key"], key.id, key.tenant, key.name, key_hash, key.created_at
            )

        await self.db.write(op)

    async def revoke_api_key(self, key_id: str) -> bool:
        async def op(tx: Tx) -> bool:
            return str(await tx.conn.execute(Q["revoke_api_key"], key_id)) == "UPDATE 1"

        return await self.db.write(op)

    async def list_api_keys(self) -> list[ApiKey]:
        return [ApiKey(**dict(r)) for r in await self.db.fetch(Q["list_api_keys"])]

    async def authenticate(self, key_hash: str) -> str | None:
        tenant = await self.db.fetchval(Q["authenticate"], key_hash)
        return None if tenant is None else str(tenant)

    async def has_api_keys(self) -> bool:
        return bool(await self.db.fetchval(Q["has_api_keys"]))

    # -- maintenance ---------------------------------------------------------------------
    async def sweep(self) -> Sweep:
        return await self.db.write(_sweep)

    # -- waiting -------------------------------------------------------------------------
    def watch_work(self, kinds: Sequence[str]) -> DueWorkWatch:
        wanted = list(kinds)
        return DueWorkWatch(self.notifier, lambda: self.has_due_work(wanted))

    def watch_job(self, job_id: str | None) -> Watch:
        return self.notifier.watch(ANY_JOB if job_id is None else job_key(job_id))

    def subscribe_job(self, job_id: str) -> Subscription:
        return self.notifier.subscription(job_key(job_id))

    def watch_cancel(self, worker: str) -> Watch:
        return self.notifier.watch(cancel_key(worker))

    async def has_due_work(self, kinds: list[str]) -> bool:
        return bool(await self.db.fetchval(Q["has_due_work"], kinds))


async def _apply_updates(
    tx: Tx, worker: str, updates: Sequence[JobUpdate]
) -> dict[str, tuple[int, float]]:
    """Apply fenced updates: ``{job_id: (last_seq, progress)}`` after them, for those whose
    lease still holds; several updates of one job are applied in order, one round each."""
    applied: dict[str, tuple[int, float]] = {}
    for round_ in update_rounds(updates):
        applied.update(await _apply_round(tx, worker, round_))
    return applied


async def _apply_round(
    tx: Tx, worker: str, updates: list[JobUpdate]
) -> dict[str, tuple[int, float]]:
    columns: list[list[Any]] = [[] for _ in range(11)]
    for u in updates:
        values = (
            u.job_id, u.attempt, len(u.events), u.progress, text(u.stage), text(u.message),
            u.eta_seconds,
            u.input_tokens, u.output_tokens, u.has_checkpoint,
            dumps(u.checkpoint) if u.has_checkpoint else None,
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await tx.conn.fetch(Q["report_progress"], worker, *columns)
    by_id = {u.job_id: u for u in updates}
    applied: dict[str, tuple[int, float]] = {}
    events: list[tuple[int, int, str, str]] = []
    for row in rows:
        job_id, last_seq = row["id"], row["last_seq"]
        applied[job_id] = (last_seq, row["progress"])
        update = by_id[job_id]
        if update.events:
            first = last_seq - len(update.events) + 1
            events += [
                (row["num"], first + i, kind, dumps(data))
                for i, (kind, data) in enumerate(update.events)
            ]
            tx.notes.add(job_key(job_id))
    await _insert_events(tx.conn, events)
    return applied


async def _insert_events(conn: Conn, events: Sequence[tuple[int, int, str, str]]) -> None:
    if events:
        nums, seqs, types, data = (list(column) for column in zip(*events, strict=True))
        await conn.execute(Q["insert_events"], nums, seqs, types, data)


async def _insert_status(tx: Tx, num: int, job_id: str, seq: int, data: dict[str, Any]) -> None:
    await tx.conn.execute(Q["insert_event"], num, seq, "status", dumps(data))
    tx.notes.add(job_key(job_id))


async def _sweep(tx: Tx) -> Sweep:
    conn = tx.conn
    counts = {Status.PENDING: 0, Status.FAILED: 0, Status.CANCELLED: 0}
    ended_nums: list[int] = []
    now = float(await conn.fetchval(Q["now"]))
    for row in await conn.fetch(Q["expired_leases"]):
        status, error = lease_expired(
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            cancel_requested=bool(row["cancel_requested"]),
        )
        finished_at = None if status is Status.PENDING else now
        ended = await conn.fetchrow(
            Q["end_expired_lease"],
            status.value,
            error.model_dump_json() if error else None,
            finished_at,
            row["id"],
            row["attempt"],
        )
        if ended is not None:
            counts[status] += 1
            if status is not Status.PENDING:
                ended_nums.append(ended["num"])
            data = lease_expired_event(status, row["attempt"], error)
            await _insert_status(tx, ended["num"], row["id"], ended["last_seq"], data)
    await record_outbox(tx, ended_nums)
    if counts[Status.PENDING]:
        tx.notes.add(WORK)
    expired = int(await conn.fetchval(Q["expire_results"]))
    await conn.execute(Q["expire_deliveries"], RETENTION_SECONDS)
    return Sweep(
        requeued=counts[Status.PENDING],
        failed=counts[Status.FAILED],
        cancelled=counts[Status.CANCELLED],
        results_expired=expired,
    )


_PENDING = dumps(status_event(Status.PENDING, 0))
