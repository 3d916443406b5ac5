"""Contract: listing jobs (filters, cursor pages) and reading events, on every backend."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import pytest

from longjobs.backends.base import Backend
from longjobs.models import Job, Status
from tests.backends.contract import (
    KIND,
    OTHER_KIND,
    OTHER_TENANT,
    TENANT,
    WORKER,
    complete,
    create,
    make_job,
    start,
    update,
)


async def _created_one_by_one(backend: Backend, count: int, **overrides: object) -> list[Job]:
    jobs = []
    for _ in range(count):
        jobs.append(await create(backend, **overrides))
        await asyncio.sleep(0.002)  # distinct creation times even on a millisecond clock
    return jobs


async def _all_pages(backend: Backend, limit: int, kind: Sequence[str] = ()) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await backend.list_jobs(TENANT, kind=kind, limit=limit, cursor=cursor)
        pages.append([j.id for j in page.data])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


# -- list_jobs -------------------------------------------------------------------------------


async def test_list_jobs_shows_the_newest_first(backend: Backend) -> None:
    jobs = await _created_one_by_one(backend, 5)

    page = await backend.list_jobs(TENANT)

    assert [j.id for j in page.data] == [j.id for j in reversed(jobs)]
    assert page.next_cursor is None


async def test_list_jobs_shows_only_the_tenants_own_jobs(backend: Backend) -> None:
    mine = await create(backend)
    await create(backend, tenant=OTHER_TENANT)

    assert [j.id for j in (await backend.list_jobs(TENANT)).data] == [mine.id]
    assert (await backend.list_jobs("nobody")).data == []


async def test_list_jobs_filters_by_status(backend: Backend) -> None:
    running = await start(backend)
    done = await start(backend)
    await complete(backend, done, "ok")
    pending = await create(backend)

    def ids(page_jobs: list[Job]) -> set[str]:
        return {j.id for j in page_jobs}

    assert ids((await backend.list_jobs(TENANT, status=[Status.RUNNING])).data) == {running.id}
    assert ids(
        (await backend.list_jobs(TENANT, status=[Status.PENDING, Status.COMPLETED])).data
    ) == {pending.id, done.id}
    assert (await backend.list_jobs(TENANT, status=[Status.FAILED])).data == []


async def test_list_jobs_filters_by_kind(backend: Backend) -> None:
    summary = await create(backend, kind=KIND)
    translation = await create(backend, kind=OTHER_KIND)

    only_translations = await backend.list_jobs(TENANT, kind=[OTHER_KIND])
    both = await backend.list_jobs(TENANT, kind=[KIND, OTHER_KIND])

    assert [j.id for j in only_translations.data] == [translation.id]
    assert {j.id for j in both.data} == {summary.id, translation.id}


async def test_list_jobs_leaves_results_out(backend: Backend) -> None:
    job = await start(backend)
    await complete(backend, job, {"big": "result"})

    [listed] = (await backend.list_jobs(TENANT)).data

    assert (listed.status, listed.result, listed.result_size) == (
        Status.COMPLETED,
        None,
        len(b'{"big": "result"}'),
    )


async def test_cursor_pages_return_every_job_exactly_once(backend: Backend) -> None:
    await backend.create_jobs([make_job(input={"n": n}) for n in range(45)])
    everyone = {j.id for j in (await backend.list_jobs(TENANT, limit=100)).data}

    pages = await _all_pages(backend, limit=10)

    assert [len(p) for p in pages] == [10, 10, 10, 10, 5]
    flat = [job_id for page in pages for job_id in page]
    assert len(flat) == len(set(flat)) == 45
    assert set(flat) == everyone
    assert flat == [j.id for j in (await backend.list_jobs(TENANT, limit=100)).data]


async def test_cursor_pages_are_stable_when_jobs_arrive_between_pages(
    backend: Backend,
) -> None:
    await backend.create_jobs([make_job() for _ in range(45)])
    await asyncio.sleep(0.002)
    first = await backend.list_jobs(TENANT, limit=10)
    seen = [j.id for j in first.data]
    newcomers = {j.id for j in await backend.create_jobs([make_job() for _ in range(7)])}
    cursor = first.next_cursor

    while cursor is not None:
        page = await backend.list_jobs(TENANT, limit=10, cursor=cursor)
        seen += [j.id for j in page.data]
        cursor = page.next_cursor
        await create(backend)  # yet more arrivals, after every page

    assert len(seen) == len(set(seen)) == 45
    assert not set(seen) & newcomers


async def test_cursor_pages_respect_filters(backend: Backend) -> None:
    await backend.create_jobs([make_job(kind=KIND) for _ in range(12)])
    translations = await backend.create_jobs([make_job(kind=OTHER_KIND) for _ in range(7)])

    pages = await _all_pages(backend, limit=3, kind=[OTHER_KIND])

    assert [len(p) for p in pages] == [3, 3, 1]
    assert {job_id for page in pages for job_id in page} == {j.id for j in translations}


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "job_1"]').decode(),
        "",
    ],
    ids=["garbage", "json-object", "wrong-types", "empty"],
)
async def test_an_invalid_cursor_is_a_value_error(backend: Backend, cursor: str) -> None:
    await create(backend)

    with pytest.raises(ValueError, match="cursor"):
        await backend.list_jobs(TENANT, cursor=cursor)


# -- list_events -----------------------------------------------------------------------------


async def _job_with_events(backend: Backend, logs: int) -> str:
    job = await start(backend)
    await backend.append_events(WORKER, [update(job, *[("log", {"n": n}) for n in range(logs)])])
    return job.id  # events: 0 pending, 1 running, 2.. logs


async def test_list_events_after_returns_only_later_events(backend: Backend) -> None:
    job_id = await _job_with_events(backend, 4)

    events = await backend.list_events(TENANT, job_id, after=2)

    assert events is not None
    assert [(e.sequence_number, e.data) for e in events] == [
        (3, {"n": 1}),
        (4, {"n": 2}),
        (5, {"n": 3}),
    ]
    assert all(e.job_id == job_id for e in events)
    assert await backend.list_events(TENANT, job_id, after=5) == []


async def test_list_events_honours_the_limit(backend: Backend) -> None:
    job_id = await _job_with_events(backend, 4)

    head = await backend.list_events(TENANT, job_id, limit=2)
    middle = await backend.list_events(TENANT, job_id, after=2, limit=2)

    assert head is not None
    assert middle is not None
    assert [e.sequence_number for e in head] == [0, 1]
    assert [e.sequence_number for e in middle] == [3, 4]


async def test_list_events_is_none_for_a_missing_or_foreign_job(backend: Backend) -> None:
    job_id = await _job_with_events(backend, 1)

    assert await backend.list_events(OTHER_TENANT, job_id) is None
    assert await backend.list_events(TENANT, "job_" + "0" * 32) is None


async def test_event_times_are_aware_and_in_order(backend: Backend) -> None:
    job_id = await _job_with_events(backend, 3)

    events = await backend.list_events(TENANT, job_id)

    assert events is not None
    assert all(e.at.tzinfo is not None for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
