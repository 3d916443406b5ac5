"""Costly readings shared between requests: ``Reused``."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Reading(Generic[V]):
    task: asyncio.Future[V]
    fresh_until: float | None = None  # None while the reading runs


class Reused(Generic[K, V]):
    """Each key's reading answers every request that asks while it runs and for ``fresh``
    seconds after it finished: one reading at a time per key, however slow it is and however
    many ask. A failed reading is not kept. At most ``size`` keys are remembered (the least
    recently asked for are dropped)."""

    def __init__(
        self, fresh: float, *, size: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fresh = fresh
        self.clock = clock
        self._size = size
        self._readings: OrderedDict[K, _Reading[V]] = OrderedDict()

    async def get(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        reading = self._readings.get(key)
        if reading is None or (
            reading.fresh_until is not None and reading.fresh_until <= self.clock()
        ):
            reading = _Reading(asyncio.ensure_future(read()))
            self._readings[key] = reading
            reading.task.add_done_callback(partial(self._finished, key, reading))
            while len(self._readings) > self._size:
                self._readings.popitem(last=False)
        else:
            self._readings.move_to_end(key)
        # Shielded: a client that leaves does not cancel the reading the others wait for.
        return await asyncio.shield(reading.task)

    def __len__(self) -> int:
        return len(self._readings)

    def _finished(self, key: K, reading: _Reading[V], task: asyncio.Future[V]) -> None:
        if task.cancelled() or task.exception() is not None:  # retrieved: never "unretrieved"
            if self._readings.get(key) is reading:
                del self._readings[key]
        else:
            reading.fresh_until = self.clock() + self.fresh
