"""Per-key limits of one API process: a request rate (token bucket) and concurrent streams.

Counted in this process's memory: with several API processes, each enforces its own share.
Open mode (no API keys) is not rate limited: it serves only loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from longjobs.http.problems import ProblemError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    """``rate`` requests per second per key, with bursts of up to ``burst``."""

    rate: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str) -> None:
        """Spend one token of ``key``; ProblemError 429 with ``Retry-After`` when none is left."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:  # keys come and go: forget the full ones
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < self.burst}
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self.rate
            raise ProblemError(
                "too-many-requests",
                f"over {self.rate:g} requests per second for this API key",
                retry_after=max(1, math.ceil(wait)),
            )
        bucket.tokens -= 1.0


@dataclass(slots=True)
class PendingGate:
    """At most ``limit`` pending jobs per tenant. The count is read from the store at most once
    a second per tenant and advanced locally in between, so it costs one bounded read per second
    rather than one per submission (and may let through a second's worth past the limit)."""

    limit: int
    max_age: float = 1.0
    _known: dict[str, tuple[int, float]] = field(default_factory=dict)
    _first: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def admit(self, tenant: str, count: Callable[[], Awaitable[int]]) -> None:
        """Count one more submission; ProblemError 429 when the tenant is at its limit."""
        if tenant not in self._known:  # no estimate yet: everyone waits for the first count
            async with self._first.setdefault(tenant, asyncio.Lock()):
                if tenant not in self._known:
                    self._known[tenant] = (await count(), time.monotonic())
            self._first.pop(tenant, None)
        now = time.monotonic()
        pending, checked = self._known[tenant]
        if now - checked > self.max_age:
            # One count at a time: submissions arriving meanwhile go on with the estimate, and
            # those it admits are added to the fresh count.
            self._known[tenant] = (pending, now)
            counted = await count()
            admitted_meanwhile = self._known[tenant][0] - pending
            pending, checked = counted + admitted_meanwhile, now
        if pending >= self.limit:
            self._known[tenant] = (pending, checked)
            raise ProblemError(
                "too-many-requests",
                f"this tenant already has {self.limit} pending jobs: wait for some to run",
                retry_after=5,
            )
        self._known[tenant] = (pending + 1, checked)


@dataclass(slots=True)
class StreamSlots:
    """At most ``limit`` open event streams (SSE and WebSocket) per key."""

    limit: int
    _open: dict[str, int] = field(default_factory=dict)

    @property
    def open_count(self) -> int:
        return sum(self._open.values())

    def check(self, key: str) -> None:
        """ProblemError 429 when ``key`` has no stream slot left."""
        count = self._open.get(key, 0)
        if count >= self.limit:
            raise ProblemError(
                "too-many-requests",
                f"this API key already has {count} open event streams (the limit is {self.limit})",
                retry_after=5,
            )

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """A slot for one stream while the block runs (``check`` first to refuse politely)."""
        self._open[key] = self._open.get(key, 0) + 1
        try:
            yield
        finally:
            remaining = self._open[key] - 1
            if remaining:
                self._open[key] = remaining
            else:
                del self._open[key]
