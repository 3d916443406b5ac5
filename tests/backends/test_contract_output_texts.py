"""``follow.OutputTexts`` on every backend: a job's text so far, read on from where it was."""

from __future__ import annotations

from typing import Any

import pytest

from longjobs.backends.base import Backend
from longjobs.errors import JobNotFound
from longjobs.follow import OutputTexts
from tests.backends.contract import OTHER_TENANT, TENANT, WORKER, complete, start, update


class Counting:
    """The backend, with the ``after`` of each event read recorded."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.reads: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def list_events(self, tenant: str, job_id: str, *, after: int, limit: int) -> Any:
        self.reads.append(after)
        return await self.backend.list_events(tenant, job_id, after=after, limit=limit)


async def test_the_text_grows_and_only_new_events_are_read(backend: Backend) -> None:
    job = await start(backend)
    texts = OutputTexts()
    counting: Any = Counting(backend)

    await backend.append_events(WORKER, [update(job, ("output", {"delta": "Hello"}))])
    first = await texts.text(counting, TENANT, job.id)
    seen = counting.reads[-1]
    await backend.append_events(
        WORKER,
        [update(job, ("progress", {"progress": 0.5}), ("output", {"delta": ", world"}))],
    )
    second = await texts.text(counting, TENANT, job.id)
    await complete(backend, job, {"text": "Hello, world"})
    final = await texts.text(counting, TENANT, job.id)

    assert (first, second, final) == ("Hello", "Hello, world", "Hello, world")
    assert counting.reads[0] == -1
    assert min(counting.reads[1:]) >= seen  # never from the start again
    with pytest.raises(JobNotFound):
        await texts.text(backend, OTHER_TENANT, job.id)  # another tenant's job is not there


async def test_the_least_recently_used_texts_go_first(backend: Backend) -> None:
    texts = OutputTexts(max_chars=10)
    jobs = [await start(backend) for _ in range(3)]
    for job in jobs:
        await backend.append_events(WORKER, [update(job, ("output", {"delta": "123456"}))])
        assert await texts.text(backend, TENANT, job.id) == "123456"

    assert len(texts) == 1  # 18 characters held would be over 10
    assert await texts.text(backend, TENANT, jobs[0].id) == "123456"  # read again, whole
