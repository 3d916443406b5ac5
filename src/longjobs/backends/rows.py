"""Conversions between stored rows and model values, shared by the SQL backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from longjobs.models import JSON, Event, Job, JobError, Status, Usage

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


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _dt_required(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def job_from_row(row: Row, result_body: bytes | None = None) -> Job:
    """A Job from a ``jobs`` row (column names as in the schema); values are trusted."""
    error = row["error"]
    return Job(
        id=row["id"],
        tenant=row["tenant"],
        kind=row["kind"],
        status=Status(row["status"]),
        input=loads(row["input"]),
        result=None if result_body is None else loads(result_body),
        result_size=row["result_size"],
        error=None if error is None else JobError.model_validate_json(error),
        progress=row["progress"],
        stage=row["stage"],
        message=row["message"],
        eta_seconds=row["eta_seconds"],
        cancel_requested=bool(row["cancel_requested"]),
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        timeout_seconds=row["timeout_seconds"],
        result_ttl_seconds=row["result_ttl_seconds"],
        metadata=loads(row["metadata"]),
        usage=Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
        checkpoint=loads_or_none(row["checkpoint"]),
        idempotency_key=row["idempotency_key"],
        created_at=_dt_required(row["created_at"]),
        run_at=_dt(row["run_at"]),
        started_at=_dt(row["started_at"]),
        finished_at=_dt(row["finished_at"]),
        expires_at=_dt(row["expires_at"]),
        lease_owner=row["lease_owner"],
        last_sequence_number=row["last_seq"],
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
    if version != "v1" or not isinstance(position, int) or isinstance(position, bool):
        raise ValueError("invalid cursor")
    return position
