"""The checker of RELIABILITY.md 4.0: a run read back from the API, the ledger and the SQLite file.

``check_run`` reads every submitted job and its event log over HTTP, the effect ledger written by
``ledger_job``, and the faults the driver injected, and counts:

- ``lost``: ids that got a 202 but are not terminal (or are gone);
- ``not_completed``: ids that are terminal but not ``completed``;
- ``dup_commit``: ids with other than exactly one accepted completion: a ``completed`` status event
  count other than one, or a result written by another attempt than the job's last one;
- ``dup_exec``: ids whose handler started more than once (≥ 2 ``start`` lines); every extra start
  must be *attributed* to a fault: the process that ran it was killed (or stopped) at or after
  that start, within ``attribution_window`` seconds. ``unattributed`` must be empty;
- ``commit_without_effect``: completions with no ``end`` line of the attempt that committed;
- ``event_gaps``: event logs whose sequence numbers are not exactly 0..n-1;
- ``rescued`` (attempt ≥ 2) and ``resumed`` (the result says it resumed from a checkpoint);
- ``requeue_latency``: for each attributed kill, seconds from the kill to the ``pending`` status
  event that put the job back in the queue (``reason: lease_expired`` or ``released``);
- ``integrity``: ``PRAGMA integrity_check`` of the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.ledger import LedgerLine, read_ledger


@dataclass(frozen=True)
class Fault:
    """One fault the driver injected: ``kind`` (``sigkill``, ``sigterm``...) of ``pid`` at ``at``
    (Unix seconds)."""

    pid: int
    at: float
    kind: str = "sigkill"


@dataclass
class Duplicate:
    """A job that started more than once, and why."""

    job_id: str
    attempts: list[int]
    pids: list[int]
    faults: list[dict[str, Any]]
    classification: str


@dataclass
class RunReport:
    """What ``check_run`` found; ``violations()`` lists what breaks an invariant."""

    submitted: int
    completed: int = 0
    lost: list[str] = field(default_factory=list)
    not_completed: dict[str, str] = field(default_factory=dict)
    dup_commit: list[str] = field(default_factory=list)
    dup_exec: int = 0
    extra_starts: int = 0
    unattributed: list[str] = field(default_factory=list)
    commit_without_effect: list[str] = field(default_factory=list)
    event_gaps: list[str] = field(default_factory=list)
    rescued: int = 0
    resumed: int = 0
    faults: int = 0
    requeue_latency: list[float] = field(default_factory=list)
    integrity: str | None = None
    duplicates: list[Duplicate] = field(default_factory=list)

    def violations(self) -> list[str]:
        """What breaks an invariant; empty for a good run."""
        found = []
        if self.lost:
            found.append(f"lost={len(self.lost)}: {self.lost[:5]}")
        if self.not_completed:
            found.append(f"not completed={len(self.not_completed)}: {_head(self.not_completed)}")
        if self.dup_commit:
            found.append(f"dup_commit={len(self.dup_commit)}: {self.dup_commit[:5]}")
        if self.unattributed:
            found.append(f"unattributed dup_exec={len(self.unattributed)}: {self.unattributed[:5]}")
        if self.commit_without_effect:
            found.append(f"commit without effect: {self.commit_without_effect[:5]}")
        if self.event_gaps:
            found.append(f"event log gaps: {self.event_gaps[:5]}")
        if self.integrity not in {None, "ok"}:
            found.append(f"integrity_check: {self.integrity}")
        return found

    def summary(self) -> dict[str, Any]:
        latency = sorted(self.requeue_latency)
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "lost": len(self.lost),
            "not_completed": len(self.not_completed),
            "dup_commit": len(self.dup_commit),
            "dup_exec": self.dup_exec,
            "extra_starts": self.extra_starts,
            "unattributed_dup_exec": len(self.unattributed),
            "commit_without_effect": len(self.commit_without_effect),
            "event_gaps": len(self.event_gaps),
            "rescued": self.rescued,
            "resumed": self.resumed,
            "faults": self.faults,
            "requeue_latency_p50": latency[len(latency) // 2] if latency else None,
            "requeue_latency_p100": latency[-1] if latency else None,
            "integrity": self.integrity,
        }

    def write(self, path: Path, **extra: Any) -> None:
        """``report.json``: the summary, the run's parameters and every duplicate in detail."""
        body = {
            "summary": self.summary(),
            **extra,
            "duplicates": [asdict(d) for d in self.duplicates],
            "lost": self.lost,
            "not_completed": self.not_completed,
            "dup_commit": self.dup_commit,
        }
        path.write_text(json.dumps(body, indent=2, sort_keys=False))


def _head(mapping: dict[str, str]) -> dict[str, str]:
    return dict(list(mapping.items())[:5])


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Observed:
    """A job as the API answers it (None once it is gone) and its stored events."""

    job: dict[str, Any] | None
    events: list[dict[str, Any]]


def fetch_jobs(
    client: httpx.Client, job_ids: Sequence[str], *, threads: int = 8
) -> dict[str, Observed]:
    """Each job (None when the API no longer knows it) with its stored event log."""

    def fetch(job_id: str) -> Observed:
        response = client.get(f"/v1/jobs/{job_id}")
        if response.status_code == 404:
            return Observed(None, [])
        response.raise_for_status()
        events = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"})
        events.raise_for_status()
        return Observed(response.json(), events.json()["data"])

    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(job_ids, pool.map(fetch, job_ids), strict=True))


def integrity_check(db_path: Path) -> str:
    """``PRAGMA integrity_check`` over a read-only connection: "ok" for a sound file."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(row[0]) for row in rows)


def check_run(
    client: httpx.Client,
    job_ids: Sequence[str],
    *,
    ledger_path: Path,
    db_path: Path | None,
    faults: Sequence[Fault] = (),
    attribution_window: float = 30.0,
) -> RunReport:
    """Check a finished run of ``ledger_job`` jobs; see the module docstring."""
    report = RunReport(submitted=len(job_ids), faults=len(faults))
    observed = fetch_jobs(client, job_ids)
    starts: dict[str, list[LedgerLine]] = defaultdict(list)
    ends: set[tuple[str, int, int]] = set()
    for line in read_ledger(ledger_path):
        if line.get("event") == "start":
            starts[line["job_id"]].append(line)
        elif line.get("event") == "end":
            ends.add((line["job_id"], line["attempt"], line["pid"]))
    for job_id in job_ids:
        _check_job(report, job_id, observed[job_id], ends)
        _check_starts(report, job_id, observed[job_id], starts[job_id], faults, attribution_window)
    if db_path is not None:
        report.integrity = integrity_check(db_path)
    return report


def _check_job(
    report: RunReport, job_id: str, seen: Observed, ends: set[tuple[str, int, int]]
) -> None:
    job = seen.job
    if job is None or job["status"] not in {"completed", "failed", "cancelled"}:
        report.lost.append(job_id)
        return
    sequence = [event["sequence_number"] for event in seen.events]
    if sequence != list(range(len(sequence))):
        report.event_gaps.append(job_id)
    statuses = [e["status"] for e in seen.events if e["type"] == "status"]
    terminal = [s for s in statuses if s in {"completed", "failed", "cancelled"}]
    if job["status"] != "completed":
        report.not_completed[job_id] = f"{job['status']}: {job['error']}"
        if len(terminal) != 1:
            report.dup_commit.append(job_id)
        return
    report.completed += 1
    result = job["result"] or {}
    if (
        terminal != ["completed"]
        or result.get("attempt") != job["attempt"]
        or result.get("job_id") != job_id
    ):
        report.dup_commit.append(job_id)
    if (job_id, result.get("attempt"), result.get("pid")) not in ends:
        report.commit_without_effect.append(job_id)
    if job["attempt"] >= 2:
        report.rescued += 1
    if isinstance(result.get("resumed_from"), int) and result["resumed_from"] > 0:
        report.resumed += 1


def _check_starts(
    report: RunReport,
    job_id: str,
    seen: Observed,
    starts: list[LedgerLine],
    faults: Sequence[Fault],
    window: float,
) -> None:
    if len(starts) < 2:
        return
    report.dup_exec += 1
    report.extra_starts += len(starts) - 1
    result = (seen.job or {}).get("result") or {}
    committed = (result.get("attempt"), result.get("pid"))
    explained: list[Fault] = []
    unexplained = False
    for start in sorted(starts, key=lambda line: float(line["t"])):
        if (start["attempt"], start["pid"]) == committed:
            continue
        fault = _fault_after(start, faults, window)
        if fault is None:
            unexplained = True
            continue
        explained.append(fault)
        requeued = _requeued_at(seen.events, start["attempt"], float(start["t"]))
        if requeued is not None:
            report.requeue_latency.append(round(requeued - fault.at, 3))
    if unexplained:
        report.unattributed.append(job_id)
    report.duplicates.append(
        Duplicate(
            job_id=job_id,
            attempts=[line["attempt"] for line in starts],
            pids=[line["pid"] for line in starts],
            faults=[asdict(fault) for fault in explained],
            classification="unattributed" if unexplained else "attributed",
        )
    )


def _fault_after(start: LedgerLine, faults: Sequence[Fault], window: float) -> Fault | None:
    """The first fault of the start's process at or after the start, within ``window``."""
    t = float(start["t"])
    candidates = [f for f in faults if f.pid == start["pid"] and t <= f.at <= t + window]
    return min(candidates, key=lambda f: f.at) if candidates else None


def _requeued_at(events: list[dict[str, Any]], attempt: int, after: float) -> float | None:
    """When the job went back to ``pending`` after ``attempt`` lost its worker: the lease
    expired (the event carries that attempt) or the lease was released (attempt not counted)."""
    for event in events:
        if event["type"] != "status" or event.get("status") != "pending":
            continue
        reason = (event.get("detail") or {}).get("reason")
        expired = reason == "lease_expired" and event.get("attempt") == attempt
        released = reason == "released" and event.get("attempt") == attempt - 1
        if (expired or released) and _timestamp(event["at"]) >= after:
            return _timestamp(event["at"])
    return None
