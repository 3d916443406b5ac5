"""Work that runs beside the API for as long as it serves: background tasks (an in-process worker,
for ``longjobs serve``) started at startup and cancelled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

logger = logging.getLogger("longjobs.http")

BackgroundFunction = Callable[[], Awaitable[None]]
"""A coroutine function run as one task for the life of the API, e.g. ``worker.run_forever``."""


class BackgroundTasks:
    """Runs each function as an asyncio task while the API serves (``async with``).

    A task that ends before shutdown, by returning or raising, is logged as an error and makes
    the API not ready (``/readyz`` answers 503), since whatever it did has stopped. On exit every
    task still running is cancelled and awaited; errors raised then are logged, not propagated,
    so that shutdown always completes.
    """

    def __init__(self, functions: Sequence[BackgroundFunction] = ()) -> None:
        self._functions = list(functions)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def __aenter__(self) -> BackgroundTasks:
        self._stopping = False
        for function in self._functions:
            task = asyncio.create_task(_run(function), name=_name_of(function))
            task.add_done_callback(self._on_done)
            self._tasks.append(task)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        running = [task for task in self._tasks if not task.done()]  # the others were logged
        for task in running:
            task.cancel()
        outcomes = await asyncio.gather(*running, return_exceptions=True)
        for task, outcome in zip(running, outcomes, strict=True):
            if isinstance(outcome, Exception):
                logger.error("background task %s failed to stop", task.get_name(), exc_info=outcome)
        self._tasks.clear()

    @property
    def stopped(self) -> list[str]:
        """Names of the tasks that ended while the API was still serving."""
        return [task.get_name() for task in self._tasks if task.done() and not self._stopping]

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("background task %s crashed", task.get_name(), exc_info=error)
        else:
            logger.error("background task %s returned while the API is serving", task.get_name())


async def _run(function: BackgroundFunction) -> None:
    await function()


def _name_of(function: BackgroundFunction) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
