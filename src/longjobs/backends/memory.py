"""An in-memory backend for unit tests and experiments: the same semantics, no durability.

All state lives in dicts owned by one event loop; every method completes without awaiting
anything but the notifier, so each call is atomic with respect to the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from longjobs.backends.memory_webhooks import MemoryWebhooks
from longjobs.backends.notify import (
    ANY_JOB,
    WORK,
    Notifier,
    Subscription,
    Watch,
    cancel_key,
    job_key,
)
from longjobs.backends.rows import (
    decode_change,
    decode_cursor,
    encode_change,
    encode_cursor,
    status_event,
)
from longjobs.backends.settle import lease_expired, settle
from longjobs.backends.stats import (
    JobTimes,
    QueueStats,
    check_minutes,
    queue_stats_of,
    rows_of_jobs,
    window_start,
)
from longjobs.errors import IdempotencyConflict, StorageError
from longjobs.models import (
    JSON,
    Event,
    Job,
    JobError,
    Page,
    Status,
    Usage,
    check_transition,
    utc_from_timestamp,
)
from longjobs.settings import Settings


@dataclass(slots=True)
class _Record:
    new: NewJob
    num: int
    created_at: float
    run_at: float
    status: Status = Status.PENDING
    attempt: int = 0
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    eta_seconds: float | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    checkpoint: JSON = None
    lease_owner: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    result: StoredResult | None = None
    result_size: int | None = None
    events: list[Event] = field(default_factory=list)
    change: int = 0  # the change feed's order: bumped with every event
    ended: Callable[[_Record], None] | None = None  # told of the move to a terminal status

    def move(self, status: Status) -> None:
        """Change the status through the one lifecycle rule (raises InvalidTransition)."""
        check_transition(self.status, status)
        was_terminal, self.status = self.status.is_terminal, status
        if status.is_terminal and not was_terminal and self.ended is not None:
            self.ended(self)

    def holds(self, worker: str, attempt: int | None = None) -> bool:
        return (
            self.status is Status.RUNNING
            and self.lease_owner == worker
            and (attempt is None or self.attempt == attempt)
        )


class MemoryBackend(MemoryWebhooks):
    """The Backend protocol in process memory (``memory://``)."""

    def __init__(self, url: str = "memory://", settings: Settings | None = None) -> None:
        self.url = url
        self.settings = settings or Settings()
        self.notifier = Notifier()
        self._jobs: dict[str, _Record] = {}
        self._idempotency: dict[tuple[str, str], str] = {}
        self._numbers = itertools.count(1)
        self._changes = itertools.count(1)
        self._keys: dict[str, ApiKey] = {}
        self._key_hashes: set[str] = set()
        self._workers: dict[str, float] = {}  # worker → when its registration runs out
        self.clock_offset = 0.0  # tests move the store's clock forward with this
        self._webhooks_init()

    def now(self) -> float:
        return time.time() + self.clock_offset

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------
    def _ended(self, rec: _Record) -> None:
        self.outbox_event(
            tenant=rec.new.tenant,
            job_id=rec.new.id,
            kind=rec.new.kind,
            status=rec.status,
            webhook_url=rec.new.webhook_url,
            result=lambda: rec.result.body if rec.result is not None else None,
        )

    def _job_exists(self, tenant: str, job_id: str) -> bool:
        rec = self._jobs.get(job_id)
        return rec is not None and rec.new.tenant == tenant

    def _snapshot(self, rec: _Record, *, with_result: bool = True) -> Job:
        new = rec.new
        inline = (
            with_result
            and rec.result is not None
            and rec.result.content_type == "application/json"
            and len(rec.result.body) <= self.settings.inline_result_bytes
        )
        return Job(
            id=new.id,
            tenant=new.tenant,
            kind=new.kind,
            status=rec.status,
            input=new.input,
            result=json.loads(rec.result.body) if inline and rec.result else None,
            result_size=rec.result_size,
            error=rec.error,
            progress=rec.progress,
            stage=rec.stage,
            message=rec.message,
            eta_seconds=rec.eta_seconds,
            cancel_requested=rec.cancel_requested,
            attempt=rec.attempt,
            max_attempts=new.max_attempts,
            priority=new.priority,
            timeout_seconds=new.timeout_seconds,
            result_ttl_seconds=new.result_ttl_seconds,
            metadata=new.metadata,
            usage=Usage(input_tokens=rec.input_tokens, output_tokens=rec.output_tokens),
            checkpoint=rec.checkpoint,
            idempotency_key=new.idempotency_key,
            created_at=datetime.fromtimestamp(rec.created_at, UTC),
            run_at=utc_from_timestamp(rec.run_at),
            started_at=utc_from_timestamp(rec.started_at),
            finished_at=utc_from_timestamp(rec.finished_at),
            expires_at=utc_from_timestamp(rec.expires_at),
            lease_owner=rec.lease_owner,
            last_sequence_number=len(rec.events) - 1,
            webhook_url=new.webhook_url,
        )

    def _append(self, rec: _Record, kind: str, data: dict[str, JSON]) -> None:
        event = Event(
            job_id=rec.new.id,
            sequence_number=len(rec.events),
            type=kind,
            at=datetime.fromtimestamp(self.now(), UTC),
            data=data,
        )
        rec.events.append(event)
        rec.change = next(self._changes)
        self.notifier.fire([job_key(rec.new.id)])

    def _status(self, rec: _Record, error: JobError | None = None, **detail: JSON) -> None:
        data = status_event(rec.status, rec.attempt, _dump(error), **detail)
        self._append(rec, "status", data)

    def _visible(self, tenant: str, job_id: str) -> _Record | None:
        rec = self._jobs.get(job_id)
        return rec if rec is not None and rec.new.tenant == tenant else None

    # -- submitting ----------------------------------------------------------------------
    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        if new.idempotency_key is not None:
            existing = self._idempotency.get((new.tenant, new.idempotency_key))
            if existing is not None and existing in self._jobs:
                rec = self._jobs[existing]
                if rec.new.request_hash != new.request_hash or rec.new.kind != new.kind:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request"
                    )
                return self._snapshot(rec), False
            self._idempotency[(new.tenant, new.idempotency_key)] = new.id
        now = self.now()
        rec = _Record(
            new=new,
            num=next(self._numbers),
            created_at=now,
            run_at=now + max(0.0, new.delay_seconds),
            ended=self._ended,
        )
        self._jobs[new.id] = rec
        self._status(rec)
        self.notifier.fire([WORK])
        return self._snapshot(rec), True

    async def create_jobs(self, new: Sequence[NewJob]) -> list[Job]:
        return [(await self.create_job(n))[0] for n in new]

    # -- the worker side -----------------------------------------------------------------
    async def claim_jobs(
        self, worker: str, kinds: Sequence[str], limit: int, lease_seconds: float
    ) -> list[Job]:
        now = self.now()
        wanted = set(kinds)
        due = [
            r
            for r in self._jobs.values()
            if r.status is Status.PENDING and r.run_at <= now and r.new.kind in wanted
        ]
        due.sort(key=lambda r: (-r.new.priority, r.run_at, r.num))
        claimed = []
        for rec in due[: max(0, limit)]:
            rec.move(Status.RUNNING)
            rec.attempt += 1
            rec.lease_owner, rec.lease_until, rec.started_at = worker, now + lease_seconds, now
            self._status(rec)
            claimed.append(self._snapshot(rec))
        return claimed

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        records = (self._jobs.get(job_id) for job_id in job_ids)
        held = [r for r in records if r is not None and r.holds(worker)]
        for rec in held:
            rec.lease_until = self.now() + lease_seconds
        return Heartbeat(
            held=frozenset(r.new.id for r in held),
            cancel_requested=frozenset(r.new.id for r in held if r.cancel_requested),
        )

    async def cancel_requests(self, worker: str) -> frozenset[str]:
        return frozenset(
            r.new.id for r in self._jobs.values() if r.holds(worker) and r.cancel_requested
        )

    async def append_events(self, worker: str, updates: Sequence[JobUpdate]) -> set[str]:
        return {u.job_id for u in updates if not self._apply_update(worker, u)}

    def _apply_update(self, worker: str, update: JobUpdate) -> bool:
        rec = self._jobs.get(update.job_id)
        if rec is None or not rec.holds(worker, update.attempt):
            return False
        if update.progress is not None:
            rec.progress, rec.stage, rec.message = update.progress, update.stage, update.message
            rec.eta_seconds = update.eta_seconds
        if update.input_tokens is not None:
            rec.input_tokens = update.input_tokens
        if update.output_tokens is not None:
            rec.output_tokens = update.output_tokens
        if update.has_checkpoint:
            rec.checkpoint = update.checkpoint
        for kind, data in update.events:
            self._append(rec, kind, data)
        return True

    async def finish_jobs(self, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        return [self._finish(worker, f) for f in finishes]

    def _finish(self, worker: str, finish: Finish) -> bool:
        rec = self._jobs.get(finish.job_id)
        if rec is None or not rec.holds(worker, finish.attempt):
            return False
        if finish.update is not None:
            self._apply_update(worker, finish.update)
        outcome = finish.outcome
        settled = settle(
            outcome,
            attempt=rec.attempt,
            cancel_requested=rec.cancel_requested,
            progress=rec.progress,
            run_at=rec.run_at,
            result_ttl=rec.new.result_ttl_seconds,
            now=self.now(),
            inline_limit=self.settings.inline_result_bytes,
        )
        rec.lease_owner = rec.lease_until = None
        rec.move(settled.status)
        rec.progress = settled.progress
        rec.error = None if settled.error is None else JobError.model_validate_json(settled.error)
        rec.eta_seconds = settled.eta_seconds
        rec.result_size, rec.expires_at = settled.result_size, settled.expires_at
        rec.finished_at, rec.run_at = settled.finished_at, settled.run_at
        if isinstance(outcome, Completed):
            rec.result = StoredResult(outcome.body, outcome.content_type)
        self._append(rec, "status", json.loads(settled.event))
        if rec.status is Status.PENDING:
            self.notifier.fire([WORK])
        return True

    async def release_jobs(self, worker: str, job_ids: Sequence[str]) -> int:
        released = 0
        for job_id in job_ids:
            rec = self._jobs.get(job_id)
            if rec is not None and rec.holds(worker):
                rec.attempt = rec.attempt - 1
                rec.lease_owner = rec.lease_until = None
                rec.move(Status.CANCELLED if rec.cancel_requested else Status.PENDING)
                if rec.cancel_requested:
                    rec.finished_at = self.now()
                self._status(rec, reason="released")
                released += 1
        self.notifier.fire([WORK])
        return released

    # -- the client side -----------------------------------------------------------------
    async def request_cancel(self, tenant: str, job_id: str) -> Job | None:
        rec = self._visible(tenant, job_id)
        if rec is None:
            return None
        if rec.status is Status.PENDING:
            rec.move(Status.CANCELLED)
            rec.cancel_requested, rec.finished_at = True, self.now()
            self._status(rec)
        elif rec.status is Status.RUNNING and not rec.cancel_requested:
            rec.cancel_requested = True
            self._status(rec, cancel_requested=True)
            self.notifier.fire([cancel_key(rec.lease_owner or "")])
        return self._snapshot(rec)

    async def delete_job(self, tenant: str, job_id: str) -> bool:
        rec = self._visible(tenant, job_id)
        if rec is None:
            return False
        del self._jobs[job_id]
        if rec.new.idempotency_key is not None:
            self._idempotency.pop((tenant, rec.new.idempotency_key), None)
        self.notifier.fire([job_key(job_id)])
        return True

    async def get_job(self, tenant: str, job_id: str, *, with_result: bool = True) -> Job | None:
        rec = self._visible(tenant, job_id)
        return None if rec is None else self._snapshot(rec, with_result=with_result)

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: Sequence[Status] = (),
        kind: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        position = decode_cursor(cursor) if cursor is not None else None
        rows = [
            r
            for r in self._jobs.values()
            if r.new.tenant == tenant
            and (not status or r.status in status)
            and (not kind or r.new.kind in kind)
            and (position is None or r.num < position)
        ]
        rows.sort(key=lambda r: r.num, reverse=True)
        page, more = rows[: max(0, limit)], len(rows) > limit
        next_cursor = encode_cursor(page[-1].num) if more and page else None
        return Page(
            data=[self._snapshot(r, with_result=False) for r in page], next_cursor=next_cursor
        )

    async def get_result(self, tenant: str, job_id: str) -> StoredResult | None:
        rec = self._visible(tenant, job_id)
        if rec is None or rec.status is not Status.COMPLETED or rec.result is None:
            return None
        if rec.expires_at is not None and rec.expires_at <= self.now():
            return None
        return rec.result

    async def stream_result(
        self, tenant: str, job_id: str, *, chunk_size: int = 256 * 1024
    ) -> ResultStream | None:
        stored = await self.get_result(tenant, job_id)
        if stored is None:
            return None
        body = stored.body

        async def chunks() -> AsyncGenerator[bytes, None]:
            for offset in range(0, len(body), chunk_size):
                yield body[offset : offset + chunk_size]

        return ResultStream(stored.content_type, len(body), chunks())

    async def list_events(
        self, tenant: str, job_id: str, *, after: int = -1, limit: int = 1000
    ) -> list[Event] | None:
        rec = self._visible(tenant, job_id)
        return None if rec is None else rec.events[max(0, after + 1) : after + 1 + limit]

    async def changed_jobs(
        self, tenant: str, after: str | None, *, limit: int = 100
    ) -> tuple[list[Change], str]:
        if after is None:
            head = max((rec.change for rec in self._jobs.values()), default=0)
            return [], encode_change(head, 2**62)
        position = decode_change(after)
        mine = (r for r in self._jobs.values() if r.new.tenant == tenant)
        after_cursor = (r for r in mine if (r.change, r.num) > position)
        recs = sorted(after_cursor, key=lambda r: (r.change, r.num))[: max(1, limit)]
        changes = [
            Change(encode_change(r.change, r.num), self._snapshot(r, with_result=False))
            for r in recs
        ]
        return changes, changes[-1].cursor if changes else after

    async def job_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for rec in self._jobs.values():
            key = (rec.status.value, rec.new.kind)
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def usage_by_kind(self, tenant: str) -> dict[str, KindUsage]:
        totals: dict[str, tuple[int, int, int]] = {}
        for rec in self._jobs.values():
            if rec.new.tenant == tenant and (rec.input_tokens or rec.output_tokens):
                jobs, spent_in, spent_out = totals.get(rec.new.kind, (0, 0, 0))
                totals[rec.new.kind] = (
                    jobs + 1,
                    spent_in + rec.input_tokens,
                    spent_out + rec.output_tokens,
                )
        return {kind: KindUsage(*total) for kind, total in totals.items()}

    async def count_pending(self, tenant: str, *, limit: int) -> int:
        pending = (r for r in self._jobs.values() if r.new.tenant == tenant)
        return min(limit, sum(1 for r in pending if r.status is Status.PENDING))

    async def queue_stats(self, tenant: str, *, minutes: int = 15) -> QueueStats:
        check_minutes(minutes)
        now = self.now()
        jobs = (
            JobTimes(r.status, r.new.kind, r.run_at, r.started_at, r.finished_at)
            for r in self._jobs.values()
            if r.new.tenant == tenant
        )
        workers = sum(1 for until in self._workers.values() if until > now)
        return queue_stats_of(now, minutes, rows_of_jobs(jobs, window_start(now, minutes), workers))

    # -- the worker registry -------------------------------------------------------------
    async def worker_seen(self, worker: str, *, ttl_seconds: float) -> None:
        now = self.now()
        self._workers = {w: until for w, until in self._workers.items() if until > now}
        self._workers[worker] = now + ttl_seconds

    async def worker_gone(self, worker: str) -> None:
        self._workers.pop(worker, None)

    # -- API keys ------------------------------------------------------------------------
    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        if key_hash in self._key_hashes or any(k.id == key.id for k in self._keys.values()):
            raise StorageError("this API key already exists")
        self._keys[key_hash] = key
        self._key_hashes.add(key_hash)

    async def revoke_api_key(self, key_id: str) -> bool:
        for key_hash, key in self._keys.items():
            if key.id == key_id and key.revoked_at is None:
                self._keys[key_hash] = dataclasses.replace(key, revoked_at=self.now())
                return True
        return False

    async def list_api_keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.id))

    async def authenticate(self, key_hash: str) -> str | None:
        key = self._keys.get(key_hash)
        return key.tenant if key is not None and key.revoked_at is None else None

    async def has_api_keys(self) -> bool:
        return bool(self._keys)

    # -- maintenance ---------------------------------------------------------------------
    async def sweep(self) -> Sweep:
        now, counts = self.now(), {Status.PENDING: 0, Status.FAILED: 0, Status.CANCELLED: 0}
        for rec in self._jobs.values():
            if rec.status is Status.RUNNING and (rec.lease_until or 0) < now:
                self._end_expired_lease(rec, now)
                counts[rec.status] += 1
        if counts[Status.PENDING]:
            self.notifier.fire([WORK])
        expired = 0
        for rec in self._jobs.values():
            if rec.result is not None and rec.expires_at is not None and rec.expires_at <= now:
                rec.result, rec.result_size = None, None
                expired += 1
        self._expire_deliveries(now)
        return Sweep(
            requeued=counts[Status.PENDING],
            failed=counts[Status.FAILED],
            cancelled=counts[Status.CANCELLED],
            results_expired=expired,
        )

    def _end_expired_lease(self, rec: _Record, now: float) -> None:
        rec.lease_owner = rec.lease_until = None
        rec.error, rec.eta_seconds = None, None
        status, error = lease_expired(
            attempt=rec.attempt,
            max_attempts=rec.new.max_attempts,
            cancel_requested=rec.cancel_requested,
        )
        if status is not Status.PENDING:
            rec.move(status)
            rec.finished_at = now
            rec.error = error
        else:
            rec.move(Status.PENDING)  # keeping its run_at: back to its place in the queue
        self._status(rec, rec.error, reason="lease_expired")

    # -- waiting -------------------------------------------------------------------------
    def watch_work(self, kinds: Sequence[str]) -> Watch:
        return self.notifier.watch(WORK)

    def watch_job(self, job_id: str | None) -> Watch:
        return self.notifier.watch(ANY_JOB if job_id is None else job_key(job_id))

    def subscribe_job(self, job_id: str) -> Subscription:
        return self.notifier.subscription(job_key(job_id))

    def watch_cancel(self, worker: str) -> Watch:
        return self.notifier.watch(cancel_key(worker))


def _dump(error: JobError | None) -> JSON:
    return None if error is None else error.model_dump()
