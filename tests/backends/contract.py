"""Building blocks shared by the backend contract tests: job factories and short reads."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longjobs.backends.base import Backend, Completed, Failed, Finish, JobUpdate, NewJob
from longjobs.follow import follow_events
from longjobs.models import JSON, Event, Job, JobError, new_job_id

TENANT = "acme"
OTHER_TENANT = "globex"
KIND = "summarize"
OTHER_KIND = "translate"
WORKER = "worker-1"
OTHER_WORKER = "worker-2"
LEASE = 30.0
SHORT_LEASE = 0.05
PAST_SHORT_LEASE = 0.15
BOOM = JobError(type="upstream_timeout", message="the model did not answer", retryable=True)


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + str(path)


def make_job(**overrides: Any) -> NewJob:
    """A NewJob with a fresh id; ``overrides`` replace any field."""
    base = NewJob(
        id=new_job_id(),
        tenant=TENANT,
        kind=KIND,
        input={"text": "the quick brown fox"},
        result_ttl_seconds=3600.0,
    )
    return dataclasses.replace(base, **overrides)


async def create(backend: Backend, **overrides: Any) -> Job:
    job, created = await backend.create_job(make_job(**overrides))
    assert created
    return job


async def get(backend: Backend, job_id: str, tenant: str = TENANT) -> Job:
    job = await backend.get_job(tenant, job_id)
    assert job is not None, f"{job_id} should exist"
    return job


async def claim_one(
    backend: Backend,
    worker: str = WORKER,
    *,
    lease: float = LEASE,
    kinds: Sequence[str] = (KIND, OTHER_KIND),
) -> Job:
    claimed = await backend.claim_jobs(worker, kinds, 1, lease)
    assert len(claimed) == 1, f"expected one job to claim, got {claimed}"
    return claimed[0]


async def start(backend: Backend, *, lease: float = LEASE, **overrides: Any) -> Job:
    """Create one job and claim it as WORKER."""
    job = await create(backend, **overrides)
    claimed = await claim_one(backend, lease=lease)
    assert claimed.id == job.id
    return claimed


async def finish(backend: Backend, job: Job, outcome: Any, worker: str = WORKER) -> bool:
    [accepted] = await backend.finish_jobs(worker, [Finish(job.id, job.attempt, outcome)])
    return accepted


async def complete(backend: Backend, job: Job, result: JSON = None) -> bool:
    return await finish(backend, job, Completed(_json_bytes(result)))


async def fail_for_retry(backend: Backend, job: Job, retry_in: float = 0.0) -> bool:
    return await finish(backend, job, Failed(BOOM, retry_in=retry_in))


async def events_of(backend: Backend, job_id: str, tenant: str = TENANT) -> list[Event]:
    events = await backend.list_events(tenant, job_id)
    assert events is not None, f"{job_id} should exist"
    return events


async def status_trail(backend: Backend, job_id: str) -> list[tuple[str, int]]:
    """``(status, attempt)`` of every status event, in order."""
    return [
        (e.data["status"], e.data["attempt"])
        for e in await events_of(backend, job_id)
        if e.type == "status"
    ]


async def last_event(backend: Backend, job_id: str) -> Event:
    return (await events_of(backend, job_id))[-1]


def update(job: Job, *events: tuple[str, dict[str, JSON]], **fields: Any) -> JobUpdate:
    return JobUpdate(job_id=job.id, attempt=job.attempt, events=list(events), **fields)


async def follow_all(backend: Backend, job_id: str, after: int = -1) -> list[Event]:
    """Everything ``longjobs.follow`` yields for the job, up to its terminal event."""
    seen: list[Event] = []
    async for batch in follow_events(backend, TENANT, job_id, after=after, idle=5.0):
        seen += batch
    return seen


def assert_gap_free(events: Sequence[Event]) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))


def _json_bytes(value: JSON) -> bytes:
    return json.dumps(value).encode()
