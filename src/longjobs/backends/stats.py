"""What ``Backend.queue_stats`` answers: a tenant's jobs now, minute by minute, and live workers.

The SQL stores compute it in one statement (one snapshot, one round trip) whose rows are
``(part, status, kind, minute, n, wait_avg, wait_max)``: ``part`` says which of these they are —

- ``jobs``      the tenant's jobs of one ``(status, kind)``: ``n``;
- ``finished``  the tenant's jobs that reached ``status`` (terminal) in ``minute``: ``n``;
- ``started``   the tenant's jobs last started in ``minute``: ``n`` and their queue waits;
- ``workers``   the registrations not yet expired, all tenants: ``n``.

A ``minute`` is a whole minute of Unix time (``floor(seconds / 60)``). The memory store makes the
same rows in Python (``rows_of_jobs``); ``queue_stats_of`` folds them for every store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from longjobs.models import TERMINAL, Status

MAX_MINUTES = 60


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """One whole minute (UTC) of a tenant's queue.

    ``completed``, ``failed`` and ``cancelled`` count the jobs that reached that status with
    ``finished_at`` in this minute. ``started`` counts the jobs whose latest ``started_at`` falls
    in it (a job retried or released since counts in the minute of its latest start only), and
    ``wait_avg_seconds`` / ``wait_max_seconds`` are the mean and longest queue wait of those:
    ``started_at - run_at``, clamped at 0. ``run_at`` is when the attempt became due — creation
    plus ``delay_seconds``, or a failed attempt's end plus its retry backoff — and a claim leaves
    it as it is; a job whose lease ran out or that was released keeps its ``run_at`` too, so the
    wait of its next attempt counts from the first due time (as the worker's
    ``longjobs_queue_wait_seconds`` metric does). Both are None when ``started`` is 0.
    """

    start: datetime
    completed: int
    failed: int
    cancelled: int
    started: int
    wait_avg_seconds: float | None
    wait_max_seconds: float | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A tenant's queue at ``now`` (the store's clock).

    ``counts``: the tenant's jobs by ``(status, kind)``, non-zero entries only. ``minutes``: the
    last whole minutes up to and including the current, partial one, oldest first, every one
    present (zeros and None when nothing happened). ``workers``: the workers alive now, of every
    tenant (see ``Backend.worker_seen``).
    """

    now: datetime
    counts: dict[tuple[Status, str], int]
    minutes: list[MinuteStats]
    workers: int


class JobTimes(NamedTuple):
    """What the stats read of one job (the memory store's rows)."""

    status: Status
    kind: str
    run_at: float
    started_at: float | None
    finished_at: float | None


StatsRow = tuple[str, str | None, str | None, int | None, int, float | None, float | None]
"""``(part, status, kind, minute, n, wait_avg, wait_max)``: see the module docstring."""


def check_minutes(minutes: int) -> None:
    """Raise ValueError unless ``minutes`` is a whole number of minutes in [1, 60]."""
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise ValueError("minutes must be a whole number")
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}")


def window_start(now: float, minutes: int) -> float:
    """The Unix time at which the oldest of the last ``minutes`` minutes up to ``now`` starts."""
    return (_minute(now) - minutes + 1) * 60.0


def rows_of_jobs(jobs: Iterable[JobTimes], since: float, workers: int) -> list[StatsRow]:
    """The rows of the stats statement, for ``jobs`` (one tenant's) and ``workers`` alive."""
    counts: dict[tuple[str, str], int] = {}
    finished: dict[tuple[str, int], int] = {}
    waits: dict[int, list[float]] = {}
    for job in jobs:
        key = (job.status.value, job.kind)
        counts[key] = counts.get(key, 0) + 1
        if job.finished_at is not None and job.finished_at >= since:
            at = (job.status.value, _minute(job.finished_at))
            finished[at] = finished.get(at, 0) + 1
        if job.started_at is not None and job.started_at >= since:
            wait = max(0.0, job.started_at - job.run_at)
            waits.setdefault(_minute(job.started_at), []).append(wait)
    rows: list[StatsRow] = [("jobs", s, k, None, n, None, None) for (s, k), n in counts.items()]
    rows += [("finished", s, None, m, n, None, None) for (s, m), n in finished.items()]
    rows += [("started", None, None, m, len(w), sum(w) / len(w), max(w)) for m, w in waits.items()]
    rows.append(("workers", None, None, None, workers, None, None))
    return rows


def queue_stats_of(now: float, minutes: int, rows: Iterable[Iterable[Any]]) -> QueueStats:
    """Fold the rows of the stats statement into ``QueueStats`` (rows of minutes outside the
    window are left out)."""
    first = _minute(now) - minutes + 1
    finished: dict[int, dict[str, int]] = {}
    started: dict[int, tuple[int, float | None, float | None]] = {}
    counts: dict[tuple[Status, str], int] = {}
    workers = 0
    for part, status, kind, minute, n, wait_avg, wait_max in rows:
        if part == "jobs" and n:
            counts[(Status(status), str(kind))] = int(n)
        elif part == "finished" and Status(status) in TERMINAL:
            finished.setdefault(int(minute), {})[str(status)] = int(n)
        elif part == "started":
            started[int(minute)] = (int(n), _float(wait_avg), _float(wait_max))
        elif part == "workers":
            workers = int(n)
    return QueueStats(
        now=datetime.fromtimestamp(now, UTC),
        counts=counts,
        minutes=[
            _minute_stats(m, finished.get(m, {}), started.get(m, (0, None, None)))
            for m in range(first, first + minutes)
        ],
        workers=workers,
    )


def _minute_stats(
    minute: int, finished: dict[str, int], started: tuple[int, float | None, float | None]
) -> MinuteStats:
    return MinuteStats(
        start=datetime.fromtimestamp(minute * 60, UTC),
        completed=finished.get(Status.COMPLETED.value, 0),
        failed=finished.get(Status.FAILED.value, 0),
        cancelled=finished.get(Status.CANCELLED.value, 0),
        started=started[0],
        wait_avg_seconds=started[1],
        wait_max_seconds=started[2],
    )


def _minute(seconds: float) -> int:
    return int(seconds // 60)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
