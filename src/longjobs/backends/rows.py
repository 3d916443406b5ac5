"""Conversions between stored rows and model values, shared by the SQL backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from longjobs.models import JSON, Event, Job, JobError, Status, Usage, utc_from_timestamp

if TYPE_CHECKING:
    from longjobs.backends.base import NewJob


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# Texts stored for nearly every job: decoded without the parser, to fresh objects each time.
_COMMON: dict[str, Callable[[], JSON]] = {"null": lambda: None, "{}": dict, "[]": list}


class Row(Protocol):
    """A stored row read by column name (sqlite3.Row, asyncpg.Record, a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


def dumps(value: JSON) -> str:
    return _encode(value)


def loads(text: str | bytes) -> JSON:
    common = _COMMON.get(text) if isinstance(text, str) else None
    return common() if common is not None else json.loads(text)


def loads_or_none(text: str | bytes | None) -> JSON:
    return None if text is None else loads(text)


_dt = utc_from_timestamp


def _dt_required(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


JOB_COLUMNS = [
    "num",
    "id",
    "tenant",
    "kind",
    "status",
    "input",
    "result",
    "result_size",
    "error",
    "progress",
    "stage",
    "message",
    "eta_seconds",
    "cancel_requested",
    "attempt",
    "max_attempts",
    "priority",
    "timeout_seconds",
    "result_ttl_seconds",
    "metadata",
    "input_tokens",
    "output_tokens",
    "checkpoint",
    "idempotency_key",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "expires_at",
    "lease_owner",
    "last_seq",
    "webhook_url",
]
"""The columns, in order, of every query that reads whole jobs (``$job_columns`` in SQL)."""
JOB_SELECT = ", ".join(JOB_COLUMNS)
NUM, ID, ATTEMPT, LAST_SEQ = (JOB_COLUMNS.index(c) for c in ("num", "id", "attempt", "last_seq"))
_NO_USAGE = Usage()
_STATUSES = {s.value: s for s in Status}


def job_from_row(row: Sequence[Any], *, with_result: bool = True) -> Job:
    """A Job from a row of ``JOB_COLUMNS`` (a plain tuple: by position is the fast way)."""
    (
        _num, job_id, tenant, kind, status, input_text, result, result_size, error, progress,
        stage, message, eta_seconds, cancel_requested, attempt, max_attempts, priority,
        timeout_seconds, result_ttl_seconds, metadata, input_tokens, output_tokens, checkpoint,
        idempotency_key, created_at, run_at, started_at, finished_at, expires_at, lease_owner,
        last_seq, webhook_url,
    ) = row  # fmt: skip
    usage = (
        Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        if input_tokens or output_tokens
        else _NO_USAGE
    )
    return Job(
        id=job_id,
        tenant=tenant,
        kind=kind,
        status=_STATUSES[status],
        input=loads(input_text),
        result=None if result is None or not with_result else loads(result),
        result_size=result_size,
        error=None if error is None else JobError.model_validate_json(error),
        progress=progress,
        stage=stage,
        message=message,
        eta_seconds=eta_seconds,
        cancel_requested=bool(cancel_requested),
        attempt=attempt,
        max_attempts=max_attempts,
        priority=priority,
        timeout_seconds=timeout_seconds,
        result_ttl_seconds=result_ttl_seconds,
        metadata=loads(metadata),
        usage=usage,
        checkpoint=loads_or_none(checkpoint),
        idempotency_key=idempotency_key,
        created_at=_dt_required(created_at),
        run_at=_dt(run_at),
        started_at=_dt(started_at),
        finished_at=_dt(finished_at),
        expires_at=_dt(expires_at),
        lease_owner=lease_owner,
        last_sequence_number=last_seq,
        webhook_url=webhook_url,
    )


def job_from_new(new: NewJob, now: float) -> Job:
    """The Job that ``create_job`` just stored for ``new`` at ``now``, without reading it back."""
    return Job(
        id=new.id,
        tenant=new.tenant,
        kind=new.kind,
        status=Status.PENDING,
        created_at=_dt_required(now),
        input=new.input,
        max_attempts=new.max_attempts,
        priority=new.priority,
        timeout_seconds=new.timeout_seconds,
        result_ttl_seconds=new.result_ttl_seconds,
        metadata=new.metadata,
        idempotency_key=new.idempotency_key,
        run_at=_dt_required(now + max(0.0, new.delay_seconds)),
        webhook_url=new.webhook_url,
    )


def event_from_row(job_id: str, row: Row) -> Event:
    return Event(
        job_id=job_id,
        sequence_number=row["seq"],
        type=row["type"],
        at=_dt_required(row["at"]),
        data=loads(row["data"]),
    )


def status_event(
    status: Status | str, attempt: int, error: JSON = None, **detail: JSON
) -> dict[str, JSON]:
    """The data of a ``status`` event; an error travels inside ``detail``, never top level."""
    data: dict[str, JSON] = {"status": str(status), "attempt": attempt}
    if error is not None:
        detail["error"] = error
    if detail:
        data["detail"] = detail
    return data


def encode_cursor(position: int) -> str:
    """An opaque cursor for "jobs inserted before ``position``" (a store's insertion number)."""
    raw = dumps(["v1", position]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor names; raises ValueError for anything that is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        version, position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise ValueError("invalid cursor") from exc
    if version != "v1" or type(position) is not int or not 0 < position < 2**63:
        raise ValueError("invalid cursor")
    return position


def encode_change(change: int, position: int) -> str:
    """An opaque cursor of the change feed: "after the change ``change`` of job ``position``"."""
    raw = dumps(["c1", change, position]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_change(cursor: str) -> tuple[int, int]:
    """``(change, position)`` of a change-feed cursor; ValueError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        version, change, position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise ValueError("invalid cursor") from exc
    valid = all(type(n) is int and 0 <= n < 2**63 for n in (change, position))
    if version != "c1" or not valid:
        raise ValueError("invalid cursor")
    return change, position
