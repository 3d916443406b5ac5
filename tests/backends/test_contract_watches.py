"""Contract: watches wake on the changes they name, including one that lands before the wait."""

from __future__ import annotations

import asyncio

from longjobs.backends.base import Backend
from longjobs.models import new_job_id
from tests.backends.contract import (
    KIND,
    OTHER_WORKER,
    TENANT,
    WORKER,
    create,
    make_job,
    start,
    update,
)

WAKE_WITHIN = 1.0


async def test_a_job_watch_is_woken_by_an_event_from_another_task(backend: Backend) -> None:
    job = await start(backend)
    watch = backend.watch_job(job.id)

    async def report() -> None:
        await asyncio.sleep(0.01)
        await backend.append_events(WORKER, [update(job, ("log", {"message": "hi"}))])

    writer = asyncio.create_task(report())
    woken = await watch.wait(WAKE_WITHIN)
    await writer
    watch.close()

    assert woken is not None


async def test_a_change_between_watch_and_wait_is_not_lost(backend: Backend) -> None:
    job = await start(backend)

    with backend.watch_job(job.id) as watch:
        await backend.append_events(WORKER, [update(job, ("log", {"message": "hi"}))])
        woken = await watch.wait(WAKE_WITHIN)

    assert woken is not None


async def test_a_watch_on_any_job_is_woken_by_any_job(backend: Backend) -> None:
    job = await start(backend)

    with backend.watch_job(None) as watch:
        await backend.request_cancel(TENANT, job.id)
        woken = await watch.wait(WAKE_WITHIN)

    assert woken is not None


async def test_a_job_watch_is_woken_by_the_finish(backend: Backend) -> None:
    job = await start(backend)

    with backend.watch_job(job.id) as watch:
        waiter = asyncio.create_task(watch.wait(WAKE_WITHIN))
        await asyncio.sleep(0.01)
        await backend.release_jobs(WORKER, [job.id])
        woken = await waiter

    assert woken is not None


async def test_a_work_watch_is_woken_by_a_new_job(backend: Backend) -> None:
    watch = backend.watch_work([KIND])

    async def submit() -> None:
        await asyncio.sleep(0.01)
        await backend.create_job(make_job())

    submitter = asyncio.create_task(submit())
    woken = await watch.wait(WAKE_WITHIN)
    await submitter
    watch.close()

    assert woken is not None
    assert len(await backend.claim_jobs(WORKER, [KIND], 10, 30.0)) == 1


async def test_a_work_watch_is_woken_by_a_job_created_before_the_wait(
    backend: Backend,
) -> None:
    watch = backend.watch_work([KIND])
    await create(backend)

    woken = await watch.wait(WAKE_WITHIN)
    watch.close()

    assert woken is not None


async def test_a_cancel_watch_is_woken_by_a_cancel_of_that_workers_job(
    backend: Backend,
) -> None:
    job = await start(backend)

    with backend.watch_cancel(WORKER) as watch:
        canceller = asyncio.create_task(backend.request_cancel(TENANT, job.id))
        woken = await watch.wait(WAKE_WITHIN)
        await canceller

    assert woken is not None
    assert await backend.cancel_requests(WORKER) == {job.id}
    assert await backend.cancel_requests(OTHER_WORKER) == frozenset()


async def test_a_watch_with_nothing_to_report_times_out(backend: Backend) -> None:
    with backend.watch_job(new_job_id()) as watch:
        woken = await watch.wait(0.05)

    assert woken is None


async def test_a_job_watch_is_not_woken_by_a_change_to_another_job(
    backend: Backend, backend_name: str
) -> None:
    watched = await start(backend)
    other = await start(backend)
    await asyncio.sleep(0.05)

    with backend.watch_job(watched.id) as watch:
        await backend.append_events(WORKER, [update(other, ("log", {"message": "elsewhere"}))])
        woken = await watch.wait(0.3)

    assert woken is None
