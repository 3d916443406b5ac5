"""The per-key limits of an API process."""

from __future__ import annotations

import asyncio
import time

import pytest

from longjobs.http.limits import PendingGate, RateLimiter, StreamSlots
from longjobs.http.problems import ProblemError


def test_a_key_gets_its_burst_then_a_429_with_retry_after() -> None:
    limiter = RateLimiter(rate=0.5, burst=3)
    for _ in range(3):
        limiter.take("a")

    with pytest.raises(ProblemError) as refused:
        limiter.take("a")

    assert refused.value.slug == "too-many-requests"
    assert refused.value.extra["retry_after"] == 2  # one token per 2 s
    limiter.take("b")  # other keys are not affected


def test_tokens_come_back_at_the_rate() -> None:
    limiter = RateLimiter(rate=1000, burst=1)
    limiter.take("a")
    time.sleep(0.01)  # 10 tokens' worth, capped at the burst of 1

    limiter.take("a")
    with pytest.raises(ProblemError):
        limiter.take("a")


def test_stream_slots_are_held_while_streams_are_open() -> None:
    slots = StreamSlots(limit=2)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(ProblemError) as refused:
            slots.check("a")
        slots.check("b")
    slots.check("a")

    assert refused.value.slug == "too-many-requests"


async def test_pending_jobs_are_counted_once_for_many_concurrent_submissions() -> None:
    gate = PendingGate(limit=10)
    counts = 0
    release = asyncio.Event()

    async def count() -> int:
        nonlocal counts
        counts += 1
        await release.wait()
        return 7

    first = asyncio.create_task(gate.admit("acme", count))
    await asyncio.sleep(0)
    others = [asyncio.create_task(gate.admit("acme", count)) for _ in range(2)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *others)

    assert counts == 1, "the submissions during the count used the estimate"
    with pytest.raises(ProblemError) as refused:  # 7 counted + the 3 admitted: at the limit
        await gate.admit("acme", count)
    assert refused.value.slug == "too-many-requests"


async def test_submissions_before_the_first_count_wait_for_it() -> None:
    gate = PendingGate(limit=5)

    async def count() -> int:
        await asyncio.sleep(0.01)
        return 5  # the tenant is at its limit already

    answers = await asyncio.gather(
        *(gate.admit("acme", count) for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(answer, ProblemError) for answer in answers)
