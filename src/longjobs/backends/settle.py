"""How a finished attempt, or one whose lease ran out, changes its job: pure functions every
backend applies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from longjobs.backends.base import Completed, Failed, JobUpdate, Outcome
from longjobs.backends.rows import dumps, status_event
from longjobs.models import JSON, JobError, Status


@dataclass(frozen=True, slots=True)
class Settlement:
    """The new column values of a job whose lease holder reported ``outcome``."""

    status: Status
    error: str | None
    progress: float
    eta_seconds: float | None
    result: str | None  # the result kept in the job row
    result_apart: bytes | None  # a result too large (or not JSON) for the job row
    content_type: str
    result_size: int | None
    expires_at: float | None
    finished_at: float | None
    run_at: float
    event: str  # the data of the status event that records it


def settle(
    outcome: Outcome,
    *,
    attempt: int,
    cancel_requested: bool,
    progress: float,
    run_at: float,
    result_ttl: float | None,
    now: float,
    inline_limit: int,
) -> Settlement:
    """Completed → completed; a cancel request turns any other outcome into cancelled; Failed
    with ``retry_in`` → pending again at ``now + retry_in``; else failed or cancelled."""
    if isinstance(outcome, Completed):
        body, size = outcome.body, len(outcome.body)
        inline = size <= inline_limit and outcome.content_type == "application/json"
        return Settlement(
            status=Status.COMPLETED,
            error=None,
            progress=1.0,
            eta_seconds=0.0,
            result=body.decode() if inline else None,
            result_apart=None if inline else body,
            content_type=outcome.content_type,
            result_size=size,
            expires_at=None if result_ttl is None else now + result_ttl,
            finished_at=now,
            run_at=run_at,
            event=f'{{"status":"completed","attempt":{int(attempt)}}}',
        )
    status, error, detail = Status.CANCELLED, None, {}
    if isinstance(outcome, Failed) and not cancel_requested:
        error = outcome.error
        if outcome.retry_in is not None:
            status, detail = Status.PENDING, {"retry_in": outcome.retry_in}
            run_at = now + outcome.retry_in
        else:
            status = Status.FAILED
    event = status_event(status, attempt, error.model_dump() if error else None, **detail)
    return Settlement(
        status=status,
        error=error.model_dump_json() if error else None,
        progress=progress,
        eta_seconds=None,
        result=None,
        result_apart=None,
        content_type="application/json",
        result_size=None,
        expires_at=None,
        finished_at=None if status is Status.PENDING else now,
        run_at=run_at,
        event=dumps(event),
    )


def lease_expired(
    *, attempt: int, max_attempts: int, cancel_requested: bool
) -> tuple[Status, JobError | None]:
    """What a job whose lease ran out becomes: cancelled if a cancel was asked, failed once its
    attempts are used up, else pending again."""
    if cancel_requested:
        return Status.CANCELLED, None
    if attempt >= max_attempts:
        return Status.FAILED, JobError(
            type="attempts_exhausted",
            message=f"the worker running attempt {attempt} of {max_attempts} stopped heartbeating",
            retryable=False,
        )
    return Status.PENDING, None


def lease_expired_event(status: Status, attempt: int, error: JobError | None) -> dict[str, JSON]:
    """The status event of a job whose lease ran out (``lease_expired``'s decision)."""
    dumped = error.model_dump() if error else None
    return status_event(status, attempt, dumped, reason="lease_expired")


def update_rounds(updates: Sequence[JobUpdate]) -> list[list[JobUpdate]]:
    """``updates`` in rounds of at most one per job, keeping each job's updates in order (a
    backend applies a round in one statement)."""
    rounds: list[list[JobUpdate]] = []
    pending = list(updates)
    while pending:
        now: list[JobUpdate] = []
        later: list[JobUpdate] = []
        ids: set[str] = set()
        for update in pending:
            (later if update.job_id in ids else now).append(update)
            ids.add(update.job_id)
        rounds.append(now)
        pending = later
    return rounds
