"""The lifecycle rule, job ids and the wire shape of events."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from longjobs.errors import InvalidTransition
from longjobs.models import Event, Job, JobError, Status, check_transition, new_job_id

P, R, C, F, X = (
    Status.PENDING,
    Status.RUNNING,
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELLED,
)
ALLOWED = {(P, R), (P, X), (R, P), (R, C), (R, F), (R, X)}
ALL_PAIRS = list(itertools.product(Status, Status))


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED), ids=lambda s: str(s))
def test_lifecycle_steps_are_allowed(old: Status, new: Status) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"), [pair for pair in ALL_PAIRS if pair not in ALLOWED], ids=lambda s: str(s)
)
def test_every_other_step_is_refused(old: Status, new: Status) -> None:
    with pytest.raises(InvalidTransition, match=f"from {old.value} to {new.value}"):
        check_transition(old, new)


@pytest.mark.parametrize("terminal", [C, F, X])
def test_nothing_leaves_a_terminal_status(terminal: Status) -> None:
    assert terminal.is_terminal
    for new in Status:
        with pytest.raises(InvalidTransition):
            check_transition(terminal, new)


def test_only_completed_failed_and_cancelled_are_terminal() -> None:
    assert {s for s in Status if s.is_terminal} == {C, F, X}


def test_job_ids_are_job_and_128_random_bits_in_hex() -> None:
    assert re.fullmatch(r"job_[0-9a-f]{32}", new_job_id())


def test_a_hundred_thousand_job_ids_never_collide() -> None:
    ids = [new_job_id() for _ in range(100_000)]

    assert len(set(ids)) == 100_000
    assert all(len(i) == 36 and i.startswith("job_") for i in ids)


def test_adjacent_job_ids_share_no_time_prefix() -> None:
    ids = [new_job_id()[4:] for _ in range(1_000)]

    # With a time or counter prefix adjacent ids would share leading digits almost always;
    # with random ids the first hex digit matches 1 time in 16.
    same_first_digit = sum(a[0] == b[0] for a, b in itertools.pairwise(ids))
    assert same_first_digit < 200


def test_event_to_wire_puts_common_fields_first_then_the_data() -> None:
    at = datetime(2025, 3, 1, 12, 30, 5, 250000, tzinfo=UTC)
    event = Event(
        job_id="job_1",
        sequence_number=7,
        type="progress",
        at=at,
        data={"progress": 0.5, "stage": "reading"},
    )

    wire = event.to_wire()

    assert list(wire) == ["type", "sequence_number", "job_id", "at", "progress", "stage"]
    assert wire == {
        "type": "progress",
        "sequence_number": 7,
        "job_id": "job_1",
        "at": "2025-03-01T12:30:05.250000Z",
        "progress": 0.5,
        "stage": "reading",
    }


def test_a_result_is_expired_only_past_its_expiry() -> None:
    now = datetime.now(UTC)

    def job(expires_at: datetime | None) -> Job:
        return Job(
            id="job_1",
            tenant="t",
            kind="k",
            status=Status.COMPLETED,
            created_at=now,
            expires_at=expires_at,
        )

    assert job(now - timedelta(seconds=1)).result_expired
    assert not job(now + timedelta(hours=1)).result_expired
    assert not job(None).result_expired
    assert job(None).is_terminal


def test_job_error_is_frozen() -> None:
    error = JobError(type="timeout", message="took too long")

    with pytest.raises(ValidationError):
        error.type = "other"  # type: ignore[misc]  # the point: assignment is refused
    assert not error.retryable
