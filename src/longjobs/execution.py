"""Running one handler: its record in the worker, threads for sync handlers, cancel callbacks,
and the typed error of an exception it raised."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from longjobs.app import JobKind
from longjobs.backends.base import Failed
from longjobs.context import CancelCallback, Context
from longjobs.errors import HandlerError, RetryableError
from longjobs.models import Job, JobError

log = logging.getLogger("longjobs.worker")
T = TypeVar("T")

MESSAGE_LIMIT = 2000


@dataclass(slots=True)
class RunningJob:
    """One attempt a worker runs: the job as claimed, its context, its task and how it ends."""

    job: Job
    kind: JobKind | None
    ctx: Context
    lease_renewed_at: float
    """Monotonic time of the claim or the last heartbeat that renewed this lease."""
    started: float = 0.0
    """Monotonic time the worker started this attempt."""
    task: asyncio.Task[None] | None = None
    finishing: bool = False
    stop_reason: str | None = None
    watchdog: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    thread: asyncio.Future[Any] | None = None
    """For a sync handler: done when its thread has returned."""

    @property
    def is_sync(self) -> bool:
        return self.kind is not None and not self.kind.is_async


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def error_from_exception(exc: BaseException) -> JobError:
    """A typed, bounded JobError for an exception a handler raised."""
    if isinstance(exc, HandlerError):
        kind, retryable = exc.type, exc.retryable
    else:
        kind, retryable = type(exc).__name__, True
    message = str(exc)[:MESSAGE_LIMIT] or type(exc).__name__
    return JobError(type=kind, message=message, retryable=retryable)


def start_thread(fn: Callable[..., T], *args: Any, name: str) -> asyncio.Future[T]:
    """Run a sync handler in a thread of its own, with the calling task's contextvars; the
    future is done when the thread returns.

    Not a pool: a handler that overran its timeout or ignored a cancel keeps its thread (Python
    cannot stop a thread), and must not hold up the next jobs' threads."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = context.run(fn, *args)
        except BaseException as exc:
            call = functools.partial(future.set_exception, exc)
        else:
            call = functools.partial(future.set_result, result)
        # A closed loop raises RuntimeError: nobody waits for this thread any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, call)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


async def run_cancel_callbacks(callbacks: list[CancelCallback], job_id: str) -> None:
    """Run ``ctx.on_cancel`` callbacks in order: async ones awaited, sync ones in a thread (so a
    slow one cannot block the event loop). Their errors are logged, never raised."""
    for callback in callbacks:
        try:
            if asyncio.iscoroutinefunction(callback):
                await callback()
            else:
                outcome = await asyncio.to_thread(callback)
                if outcome is not None:
                    await outcome
        except Exception:
            log.exception("a cancel callback of %s failed", job_id)


def failure(kind: JobKind, job: Job, exc: BaseException) -> Failed:
    """The outcome of an attempt that raised ``exc``: retried per the kind's policy, or failed
    (``attempts_exhausted`` once a retryable error has used up the attempts)."""
    error = error_from_exception(exc)
    retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
    delay = kind.retry.next_delay(
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        retryable=error.retryable,
        retry_after=retry_after,
    )
    if delay is None and error.retryable and job.attempt >= job.max_attempts > 1:
        message = f"{error.type}: {error.message}"[:MESSAGE_LIMIT]
        error = JobError(type="attempts_exhausted", message=message, retryable=False)
    return Failed(error, retry_in=delay)


def timed_out(kind: JobKind, job: Job) -> Failed:
    seconds = job.timeout_seconds or 0.0
    error = RetryableError(f"the attempt exceeded its {seconds:g} s timeout", type="timeout")
    return failure(kind, job, error)


async def keep_running(loop: Callable[[], Awaitable[None]], name: str) -> None:
    """Keep a background loop alive: an unexpected error is logged and the loop restarts,
    because a dead heartbeat or flush loop would silently break every running job."""
    while True:
        try:
            await loop()
        except Exception:
            log.exception("worker loop %s failed; restarting it", name)
            await asyncio.sleep(1.0)
