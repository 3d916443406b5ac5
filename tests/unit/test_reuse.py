"""``Reused``: one costly reading per key at a time, reused for a moment, never a failed one."""

from __future__ import annotations

import asyncio

import pytest

from longjobs.http.reuse import Reused


async def test_a_slow_reading_is_shared_and_then_reused_for_a_moment() -> None:
    now = [0.0]
    reused: Reused[str, int] = Reused(2.0, clock=lambda: now[0])
    calls = 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    waiting = [asyncio.create_task(reused.get("a", read)) for _ in range(3)]
    await asyncio.sleep(0)
    now[0] += 10.0  # a reading still running is fresh, however long it takes
    waiting.append(asyncio.create_task(reused.get("a", read)))
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [1, 1, 1, 1]
    now[0] += 1.9
    assert await reused.get("a", read) == 1
    now[0] += 0.2
    assert await reused.get("a", read) == 2


async def test_a_failed_reading_is_not_kept_and_a_leaving_caller_cancels_nothing() -> None:
    reused: Reused[str, int] = Reused(60.0)
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise OSError("the store is away")
        return attempts

    first = asyncio.create_task(reused.get("a", flaky))
    leaving = asyncio.create_task(reused.get("a", flaky))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(OSError, match="away"):
        await first
    assert await reused.get("a", flaky) == 2  # read again, not the failure
    assert len(reused) == 1


async def test_only_the_most_recently_asked_keys_are_kept() -> None:
    reused: Reused[int, int] = Reused(60.0, size=3)

    async def read_value(value: int) -> int:
        return value

    for key in range(5):
        await reused.get(key, lambda key=key: read_value(key))  # type: ignore[misc]
    assert len(reused) == 3
