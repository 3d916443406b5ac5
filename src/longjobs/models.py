"""The values longjobs hands around: jobs, their status, their events.

Every value is frozen: a snapshot read from the backend, never a live handle.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from longjobs.errors import InvalidTransition

JSON = Any
"""Any value that ``json.dumps`` accepts."""


class Status(StrEnum):
    """The lifecycle of a job: ``pending → running → completed | failed | cancelled``.

    A running job goes back to ``pending`` when it is retried or its lease is reclaimed.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.PENDING, Status.COMPLETED, Status.FAILED, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def check_transition(old: Status, new: Status) -> None:
    """Raise InvalidTransition unless ``old → new`` is a step of the lifecycle.

    Terminal statuses are final: nothing leaves ``completed``, ``failed`` or ``cancelled``.
    """
    if new not in _ALLOWED[old]:
        raise InvalidTransition(f"a job cannot go from {old.value} to {new.value}")


def new_job_id() -> str:
    """A fresh job id: ``job_`` and 128 random bits, with no time or counter inside."""
    return "job_" + secrets.token_hex(16)


def utc_from_timestamp(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class JobError(BaseModel):
    """Why a job failed: a stable ``type``, a human ``message`` and whether a retry may help."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Model tokens spent by a job so far."""

    input_tokens: int = 0
    output_tokens: int = 0


_NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job as the backend last recorded it.

    A plain frozen dataclass rather than a pydantic model: workers build thousands per second.
    The wire shape is ``longjobs.schemas.JobResource``.
    """

    id: str
    tenant: str
    kind: str
    status: Status
    created_at: datetime
    input: JSON = None
    result: JSON = None
    result_size: int | None = None
    error: JobError | None = None
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    eta_seconds: float | None = None
    cancel_requested: bool = False
    attempt: int = 0
    max_attempts: int = 1
    priority: int = 0
    timeout_seconds: float | None = None
    result_ttl_seconds: float | None = None
    metadata: dict[str, JSON] = field(default_factory=dict)
    usage: Usage = _NO_USAGE
    checkpoint: JSON = None
    idempotency_key: str | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    lease_owner: str | None = None
    last_sequence_number: int = 0
    webhook_url: str | None = field(default=None, repr=False)  # such URLs often carry a token

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def result_expired(self) -> bool:
        """True once a completed job's result has passed its expiry time."""
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's append-only log; ``sequence_number`` is gap-free from 0."""

    job_id: str
    sequence_number: int
    type: str
    at: datetime
    data: dict[str, JSON] = field(default_factory=dict)

    def to_wire(self) -> dict[str, JSON]:
        """The event as API.md shows it: common fields first, then the type's own fields."""
        return {
            "type": self.type,
            "sequence_number": self.sequence_number,
            "job_id": self.job_id,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            **self.data,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a job listing; pass ``next_cursor`` back to get the next one."""

    data: list[Job]
    next_cursor: str | None = None
