"""Contract: the tenant-wide change feed (``changed_jobs``), on every backend."""

from __future__ import annotations

import pytest

from longjobs.backends.base import Backend, Change
from longjobs.backends.sqlite import SQLiteBackend
from longjobs.models import Status
from tests.backends.contract import (
    OTHER_TENANT,
    TENANT,
    WORKER,
    claim_one,
    complete,
    create,
    update,
)


async def _read_all(backend: Backend, cursor: str, limit: int = 100) -> tuple[list[Change], str]:
    seen: list[Change] = []
    while True:
        changes, cursor = await backend.changed_jobs(TENANT, cursor, limit=limit)
        seen += changes
        if len(changes) < limit:
            return seen, cursor


async def test_the_head_has_no_jobs_and_later_changes_follow_it(backend: Backend) -> None:
    before = await create(backend)
    changes, head = await backend.changed_jobs(TENANT, None)
    assert changes == []

    after = await create(backend)
    changes, cursor = await backend.changed_jobs(TENANT, head)

    assert [c.job.id for c in changes] == [after.id]
    assert changes[0].job.status is Status.PENDING
    assert before.id not in {c.job.id for c in changes}
    assert (await backend.changed_jobs(TENANT, cursor))[0] == []
    later = await create(backend)
    assert [c.job.id for c in (await backend.changed_jobs(TENANT, cursor))[0]] == [later.id]


async def test_changes_come_in_commit_order_each_job_once_at_its_latest(backend: Backend) -> None:
    _, head = await backend.changed_jobs(TENANT, None)
    first = await create(backend)
    second = await create(backend)
    running = await claim_one(backend)  # the first, the oldest
    assert running.id == first.id
    lost = await backend.append_events(
        WORKER, [update(running, ("progress", {"progress": 0.5}), progress=0.5, stage="half")]
    )
    assert not lost

    changes, cursor = await backend.changed_jobs(TENANT, head)

    assert [c.job.id for c in changes] == [second.id, first.id]
    latest = changes[-1].job
    assert (latest.status, latest.progress, latest.stage) == (Status.RUNNING, 0.5, "half")
    assert latest.result is None

    assert await complete(backend, running, {"n": 1})
    changes, _ = await backend.changed_jobs(TENANT, cursor)
    assert [(c.job.id, c.job.status) for c in changes] == [(first.id, Status.COMPLETED)]


async def test_a_cursor_resumes_exactly_after_its_change(backend: Backend) -> None:
    _, head = await backend.changed_jobs(TENANT, None)
    jobs = [await create(backend) for _ in range(7)]

    pages, cursor = await _read_all(backend, head, limit=3)
    assert [c.job.id for c in pages] == [j.id for j in jobs]

    middle = pages[2].cursor
    rest, _ = await backend.changed_jobs(TENANT, middle, limit=100)
    assert [c.job.id for c in rest] == [j.id for j in jobs[3:]]
    nothing, same = await backend.changed_jobs(TENANT, cursor)
    assert nothing == []
    assert same == cursor


async def test_the_feed_shows_only_the_tenants_own_jobs(backend: Backend) -> None:
    _, head = await backend.changed_jobs(TENANT, None)
    _, other_head = await backend.changed_jobs(OTHER_TENANT, None)
    mine = await create(backend)
    theirs = await create(backend, tenant=OTHER_TENANT)

    changes, _ = await backend.changed_jobs(TENANT, head)
    other, _ = await backend.changed_jobs(OTHER_TENANT, other_head)

    assert [c.job.id for c in changes] == [mine.id]
    assert [c.job.id for c in other] == [theirs.id]


async def test_a_cancel_is_a_change(backend: Backend) -> None:
    job = await create(backend)
    _, head = await backend.changed_jobs(TENANT, None)
    await backend.request_cancel(TENANT, job.id)
    changes, _ = await backend.changed_jobs(TENANT, head)
    assert [(c.job.id, c.job.status) for c in changes] == [(job.id, Status.CANCELLED)]


@pytest.mark.parametrize("cursor", ["", "nope", "eyJ4IjoxfQ", "WyJ2MSIsIDFd"])
async def test_a_foreign_cursor_is_refused(backend: Backend, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await backend.changed_jobs(TENANT, cursor)


async def test_another_process_sees_changes_in_commit_order(
    sqlite_backend: SQLiteBackend, sqlite_peer: SQLiteBackend
) -> None:
    _, head = await sqlite_peer.changed_jobs(TENANT, None)
    a = await create(sqlite_backend)
    b = await create(sqlite_peer)
    c = await create(sqlite_backend)

    changes, _ = await sqlite_peer.changed_jobs(TENANT, head)

    assert [ch.job.id for ch in changes] == [a.id, b.id, c.id]


async def test_deleting_the_job_changed_last_never_reuses_a_cursor(backend: Backend) -> None:
    b = await create(backend)
    a = await create(backend)
    _, head = await backend.changed_jobs(TENANT, None)
    changes_a = await backend.request_cancel(TENANT, a.id)
    assert changes_a is not None
    seen, after_a = await backend.changed_jobs(TENANT, head)
    assert [c.job.id for c in seen] == [a.id]

    assert await backend.delete_job(TENANT, a.id)
    await backend.request_cancel(TENANT, b.id)
    newest = await create(backend)

    changes, _ = await backend.changed_jobs(TENANT, after_a)
    assert [(c.job.id, c.job.status) for c in changes] == [
        (b.id, Status.CANCELLED),
        (newest.id, Status.PENDING),
    ]


async def test_other_tenants_changes_are_skipped_but_never_own_ones(backend: Backend) -> None:
    _, head = await backend.changed_jobs(TENANT, None)
    mine = await create(backend)
    for _ in range(5):
        await create(backend, tenant=OTHER_TENANT)

    changes, cursor = await backend.changed_jobs(TENANT, head)
    again, cursor = await backend.changed_jobs(TENANT, cursor)
    await create(backend, tenant=OTHER_TENANT)
    next_mine = await create(backend)
    after, _ = await backend.changed_jobs(TENANT, cursor)

    assert [c.job.id for c in changes] == [mine.id]
    assert again == []
    assert [c.job.id for c in after] == [next_mine.id]
