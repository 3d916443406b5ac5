"""The one seam to storage: the ``Backend`` protocol and the values that cross it.

The protocol speaks queue semantics (create, claim with a lease, heartbeat, fenced finish), not SQL,
so that SQLite, PostgreSQL, Redis and the in-memory store can each implement it natively. Every
backend passes the same contract suite (``tests/backends``).

Fencing: every write a worker makes carries ``(worker, attempt)``; the backend applies it only while
that worker still holds the lease of that attempt, so a paused or partitioned worker can never
overwrite the work of a newer attempt. Lease times are computed on the store's clock.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from longjobs.backends.notify import Subscription, Wake, Watch
from longjobs.backends.outbox import Delivery, DeliveryOutcome, WebhookChange, WebhookEndpoint
from longjobs.backends.stats import MinuteStats as MinuteStats  # crosses the seam too
from longjobs.backends.stats import QueueStats as QueueStats
from longjobs.models import JSON, Event, Job, JobError, Page, Status


@dataclass(frozen=True, slots=True)
class NewJob:
    """What ``create_job`` stores: a validated submission."""

    id: str
    tenant: str
    kind: str
    input: JSON
    priority: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    result_ttl_seconds: float | None = None
    delay_seconds: float = 0.0
    metadata: dict[str, JSON] = field(default_factory=dict)
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned a result, serialized to ``body`` (JSON unless told otherwise)."""

    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler failed. ``retry_in`` seconds sends the job back to pending; None ends it."""

    error: JobError
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The handler stopped because cancellation was requested."""


Outcome = Completed | Failed | Cancelled


@dataclass(frozen=True, slots=True)
class Finish:
    """One fenced finish: applied only while ``worker`` holds the lease of ``attempt``."""

    job_id: str
    attempt: int
    outcome: Outcome
    update: JobUpdate | None = None


@dataclass(slots=True)
class JobUpdate:
    """A coalesced batch of what a running handler reported since the last flush.

    ``events`` are ``(type, data)`` pairs appended in order; the other fields, when set, overwrite
    the job's columns. The whole update is fenced by ``(worker, attempt)``.
    """

    job_id: str
    attempt: int
    events: list[tuple[str, dict[str, JSON]]] = field(default_factory=list)
    progress: float | None = None
    stage: str | None = None
    message: str | None = None
    eta_seconds: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    checkpoint: JSON = None
    has_checkpoint: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a heartbeat learned: leases still held, and which of them were asked to cancel."""

    held: frozenset[str]
    cancel_requested: frozenset[str]


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A job's result as stored: the JSON text and its size in bytes."""

    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class ResultStream:
    """A stored result read part by part: ``chunks`` yields its ``size`` bytes in order and
    raises StorageError if the result goes away (expires) before it is all read."""

    content_type: str
    size: int
    chunks: AsyncGenerator[bytes, None]

    @classmethod
    def whole(cls, body: bytes, content_type: str = "application/json") -> ResultStream:
        """A result already in memory, as one chunk."""
        return cls(content_type, len(body), _one_chunk(body))


async def _one_chunk(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


@dataclass(frozen=True, slots=True)
class Change:
    """A job of the change feed at its latest state, and the feed's cursor just past it."""

    cursor: str
    job: Job


@dataclass(frozen=True, slots=True)
class KindUsage:
    """The model tokens spent by the jobs of one kind."""

    jobs: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only its SHA-256."""

    id: str
    tenant: str
    name: str | None
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one maintenance pass did."""

    requeued: int = 0
    failed: int = 0
    cancelled: int = 0
    results_expired: int = 0


class Backend(Protocol):
    """Durable storage for jobs, their events and results. Every method is safe to call
    concurrently from many tasks, processes and (for shared stores) hosts."""

    url: str

    async def open(self) -> None:
        """Connect and create or check the schema."""

    async def close(self) -> None:
        """Release connections; pending writes are committed first."""

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a job and its event 0 in one transaction; durable when this returns.

        With an idempotency key already used by the tenant, returns ``(that job, False)``; raises
        IdempotencyConflict when the earlier request's hash differs.
        """

    async def create_jobs(self, new: Sequence[NewJob]) -> list[Job]:
        """Insert many jobs (without idempotency keys) in one transaction."""

    async def claim_jobs(
        self, worker: str, kinds: Sequence[str], limit: int, lease_seconds: float
    ) -> list[Job]:
        """Atomically take up to ``limit`` due pending jobs of ``kinds``, highest priority then
        oldest first: each becomes ``running`` with ``attempt + 1`` and a lease for ``worker``."""

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        """Extend the leases of ``job_ids`` that ``worker`` still holds (only those: a job the
        worker no longer runs must be left to expire); report them and their cancel requests."""

    async def append_events(self, worker: str, updates: Sequence[JobUpdate]) -> set[str]:
        """Apply coalesced handler reports; returns the ids whose lease ``worker`` has lost."""

    async def finish_jobs(self, worker: str, finishes: Sequence[Finish]) -> list[bool]:
        """Record outcomes, fenced; False for each finish rejected because the lease was lost.

        ``Completed`` stores the result (expiring after the job's TTL); ``Failed`` with
        ``retry_in`` sends the job back to pending; a job whose cancellation was requested is
        recorded ``cancelled`` unless it completed.
        """

    async def release_jobs(self, worker: str, job_ids: Sequence[str]) -> int:
        """Give leases back at once (graceful shutdown): the jobs become pending again and the
        interrupted attempt is not counted."""

    async def request_cancel(self, tenant: str, job_id: str) -> Job | None:
        """Pending → cancelled at once; running → ``cancel_requested``; terminal → unchanged."""

    async def delete_job(self, tenant: str, job_id: str) -> bool:
        """Remove a job with its events and result; False when it does not exist."""

    async def get_job(self, tenant: str, job_id: str, *, with_result: bool = True) -> Job | None:
        """The job, or None when missing or another tenant's."""

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: Sequence[Status] = (),
        kind: Sequence[str] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first; the cursor is opaque and stable under concurrent inserts."""

    async def get_result(self, tenant: str, job_id: str) -> StoredResult | None:
        """The stored result body, or None when there is none (never stored or expired)."""

    async def stream_result(
        self, tenant: str, job_id: str, *, chunk_size: int = 256 * 1024
    ) -> ResultStream | None:
        """The stored result in parts of at most ``chunk_size`` bytes, each read from the store
        when it is wanted (a large result is never held whole); None as for ``get_result``."""

    async def list_events(
        self, tenant: str, job_id: str, *, after: int = -1, limit: int = 1000
    ) -> list[Event] | None:
        """Events with ``sequence_number > after`` in order; None when the job does not exist."""

    async def sweep(self) -> Sweep:
        """Maintenance any process may run: requeue or fail jobs whose lease expired (per their
        attempts), and drop results past their expiry."""

    async def cancel_requests(self, worker: str) -> frozenset[str]:
        """Ids of the jobs ``worker`` holds that were asked to cancel (a read, no lease change)."""

    async def changed_jobs(
        self, tenant: str, after: str | None, *, limit: int = 100
    ) -> tuple[list[Change], str]:
        """The change feed: ``tenant``'s jobs changed after the cursor ``after``, in the order
        the changes were committed, each once at its latest state (without its result; a
        job changed twice since shows once), at most ``limit``; and the cursor past the last
        one, or past other tenants' later changes too (``after`` itself when nothing changed).
        ``after=None`` is the head: no jobs and the cursor of now. Raises ValueError for a
        cursor this backend did not give."""

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are by ``(status, kind)``, all tenants (for metrics)."""

    async def count_pending(self, tenant: str, *, limit: int) -> int:
        """How many of the tenant's jobs are pending, counting no further than ``limit``."""

    async def usage_by_kind(self, tenant: str) -> dict[str, KindUsage]:
        """The model tokens the tenant's stored jobs spent, summed per kind (kinds that spent
        none are left out)."""

    async def queue_stats(self, tenant: str, *, minutes: int = 15) -> QueueStats:
        """The tenant's jobs by ``(status, kind)``, what its queue did in each of the last
        ``minutes`` minutes (up to and including the current one) and how many workers are
        alive (of all tenants), read in one snapshot with SQL aggregation. Raises ValueError
        unless ``1 <= minutes <= 60``. See ``backends/stats.py`` for what each number means.

        >>> stats = await backend.queue_stats("acme", minutes=5)
        >>> stats.counts[(Status.PENDING, "summarize")], stats.minutes[-1].completed
        (12, 3)
        """

    # -- the worker registry (workers are anonymous otherwise) -------------------------------
    async def worker_seen(self, worker: str, *, ttl_seconds: float) -> None:
        """Record that ``worker`` is alive until ``ttl_seconds`` from now (the store's clock),
        replacing its earlier registration; registrations that ran out are dropped."""

    async def worker_gone(self, worker: str) -> None:
        """Remove the registration of ``worker`` (a graceful stop); nothing if there is none."""

    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a new key by the SHA-256 (hex) of its secret."""

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key at once; False when there is no such active key."""

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key ever created, revoked ones included, oldest first."""

    async def authenticate(self, key_hash: str) -> str | None:
        """The tenant of the active key with this SHA-256, or None."""

    async def has_api_keys(self) -> bool:
        """True once any key was created (revoked ones count: revoking the last key must not
        open the server)."""

    # -- webhooks (see backends/outbox.py for the data path) --------------------------------
    async def create_webhook(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        """Store ``endpoint`` unless the tenant has one with its id already; the stored one."""

    async def get_webhook(self, tenant: str, endpoint_id: str) -> WebhookEndpoint | None:
        """One of the tenant's endpoints (``default`` included), or None."""

    async def list_webhooks(self, tenant: str) -> list[WebhookEndpoint]:
        """The tenant's endpoints, oldest first, without ``default``."""

    async def update_webhook(
        self, tenant: str, endpoint_id: str, change: WebhookChange
    ) -> WebhookEndpoint | None:
        """Apply ``change`` in one step; the endpoint after it, or None when the tenant has no
        such endpoint."""

    async def delete_webhook(self, tenant: str, endpoint_id: str) -> bool:
        """Remove an endpoint; its pending deliveries fail when they come due."""

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[Delivery]:
        """Fan the outbox out into deliveries, then lease up to ``limit`` due ones to ``owner``
        (soonest first), each with the secrets to sign it with."""

    async def record_deliveries(self, owner: str, outcomes: Sequence[DeliveryOutcome]) -> int:
        """Apply outcomes of deliveries ``owner`` still leases; how many were applied."""

    async def list_deliveries(self, tenant: str, job_id: str) -> list[Delivery] | None:
        """The deliveries of a job's events, oldest first; None when the job does not exist."""

    async def replay_delivery(self, tenant: str, job_id: str, delivery_id: str) -> Delivery | None:
        """Send a delivery again from the first step of the schedule, now (one being sent right
        now, under a lease, is left to that attempt); the delivery, or None when unknown."""

    def watch_work(self, kinds: Sequence[str]) -> WorkWatch:
        """Start watching for due work of ``kinds``; claim, then ``wait`` if nothing came."""

    def watch_job(self, job_id: str | None) -> Watch:
        """Start watching job ``job_id`` (any job, when None); read it, then ``wait``."""

    def subscribe_job(self, job_id: str) -> Subscription:
        """Start following job ``job_id``'s log: read it, then take from the subscription what
        came since (events handed over, or "stale": read again)."""

    def watch_cancel(self, worker: str) -> Watch:
        """Start watching for cancel requests on jobs leased by ``worker``."""


class WorkWatch(Protocol):
    """A registered interest in due work: ``wait`` returns when some may be due, or on timeout."""

    async def wait(self, timeout: float) -> Wake | None: ...

    def close(self) -> None: ...
