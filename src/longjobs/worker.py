"""The worker: claims jobs, runs their handlers with bounded concurrency, reports, finishes.

One worker is one asyncio task group in one process:

- ``_claim_loop``   takes up to the free slots in one atomic claim, or sleeps until work is due;
- ``_run_job``      runs one handler under its deadline and records the outcome (fenced);
- ``_heartbeat_loop`` extends every lease in one statement, independent of the handlers, and
  learns of cancel requests and lost leases;
- ``_cancel_loop``  reacts to cancel requests as soon as the backend signals them;
- ``_flush_loop``   writes the handlers' coalesced reports in one batch per interval;
- ``_sweep_loop``   requeues jobs of dead workers and expires results.

Shutdown (``stop()``, SIGTERM): stop claiming, give running jobs ``shutdown_grace`` seconds, then
interrupt the rest, save their last reports and release their leases at once so another worker
takes them without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from longjobs.app import App, JobKind
from longjobs.backends.base import Backend, Cancelled, Completed, Failed, Finish, Outcome
from longjobs.batching import Batcher
from longjobs.context import Context
from longjobs.errors import HandlerError, RetryableError, StorageUnavailable
from longjobs.models import Job, JobError
from longjobs.settings import Settings

log = logging.getLogger("longjobs.worker")
T = TypeVar("T")

_MESSAGE_LIMIT = 2000
_IDLE_CLAIM_SECONDS = 1.0  # delayed jobs and retries become due without a notification


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(slots=True)
class _Running:
    job: Job
    ctx: Context
    task: asyncio.Task[None] | None = None
    finishing: bool = False
    stop_reason: str | None = None
    watchdog: asyncio.Task[None] | None = field(default=None)
    timer: asyncio.TimerHandle | None = None


def error_from_exception(exc: BaseException) -> JobError:
    """A typed, bounded JobError for an exception a handler raised."""
    if isinstance(exc, HandlerError):
        kind, retryable = exc.type, exc.retryable
    else:
        kind, retryable = type(exc).__name__, True
    message = str(exc)[:_MESSAGE_LIMIT] or type(exc).__name__
    return JobError(type=kind, message=message, retryable=retryable)


class Worker:
    """Runs the handlers of ``app`` for jobs stored in its backend.

    >>> worker = Worker(app, concurrency=64)
    >>> task = asyncio.create_task(worker.run())   # until worker.stop()
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int | None = None,
        settings: Settings | None = None,
        kinds: list[str] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or app.settings
        self.concurrency = concurrency or self.settings.concurrency
        self.kinds = kinds or sorted(app.kinds)
        self.id = new_worker_id()
        self.running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._backend: Backend | None = None
        self._finishes: Batcher[Finish, bool] = Batcher(self._finish_batch)

    async def _finish_batch(self, finishes: list[Finish]) -> list[bool]:
        return await self.backend.finish_jobs(self.id, finishes)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the worker is not running")
        return self._backend

    def stop(self) -> None:
        """Begin a graceful shutdown; ``run()`` returns when it is complete."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and run jobs until ``stop()``; then shut down gracefully."""
        self._backend = await self.app.open()
        loops = [
            self._heartbeat_loop(),
            self._cancel_loop(),
            self._flush_loop(),
            self._sweep_loop(),
        ]
        helpers = [asyncio.create_task(loop) for loop in loops]
        log.info(
            "worker %s started: kinds=%s concurrency=%d", self.id, self.kinds, self.concurrency
        )
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info("worker %s stopped", self.id)

    # -- claiming ------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.concurrency - len(self.running)
            if free <= 0:
                self._slot_freed.clear()
                await self._until_stopping(self._slot_freed.wait())
                continue
            watch = self.backend.watch_work(self.kinds)
            try:
                jobs = await self.backend.claim_jobs(
                    self.id, self.kinds, free, self.settings.lease_seconds
                )
                for job in jobs:
                    self._start(job)
                if not jobs:
                    await self._until_stopping(watch.wait(_IDLE_CLAIM_SECONDS))
            except StorageUnavailable as exc:
                log.warning("claim failed, retrying: %s", exc)
                await self._until_stopping(asyncio.sleep(exc.retry_after))
            finally:
                watch.close()

    async def _until_stopping(self, awaitable: Awaitable[Any]) -> None:
        waiter = asyncio.ensure_future(awaitable)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([waiter, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiter, stopping):
                future.cancel()

    def _start(self, job: Job) -> None:
        previous = self.running.get(job.id)
        if previous is not None:  # an older attempt of ours, whose lease was reclaimed
            self._interrupt_entry(previous, "lease_lost")
        timeout = job.timeout_seconds
        deadline = time.time() + timeout if timeout else None
        entry = _Running(job=job, ctx=Context(job, deadline_ts=deadline))
        self.running[job.id] = entry
        entry.task = asyncio.create_task(self._run_job(entry), name=f"longjobs:{job.id}")
        if timeout:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(timeout, self._interrupt_entry, entry, "timeout")

    # -- running one job -----------------------------------------------------------------
    async def _run_job(self, entry: _Running) -> None:
        job = entry.job
        try:
            kind = self.app.kinds.get(job.kind)
            if kind is None:
                error = JobError(type="unknown_kind", message=f"no handler for {job.kind!r}")
                outcome: Outcome | None = Failed(error)
            else:
                outcome = await self._outcome_of(kind, entry)
            if outcome is not None and not entry.finishing:
                await self._finish(entry, outcome)
            elif outcome is None and entry.stop_reason == "shutdown":
                await self._save_reports(entry)
        finally:
            if entry.timer is not None:
                entry.timer.cancel()
            self._forget(entry)

    def _forget(self, entry: _Running) -> None:
        if self.running.get(entry.job.id) is entry:
            del self.running[entry.job.id]
            self._slot_freed.set()

    async def _save_reports(self, entry: _Running) -> None:
        """Keep what an interrupted handler reported last (its checkpoint above all)."""
        update = entry.ctx.take_update()
        if update is not None:
            with contextlib.suppress(StorageUnavailable):
                await self.backend.append_events(self.id, [update])

    async def _outcome_of(self, kind: JobKind, entry: _Running) -> Outcome | None:
        job, ctx = entry.job, entry.ctx
        try:
            value = kind.load_input(job.input)
        except Exception as exc:
            return Failed(JobError(type="invalid_input", message=str(exc)[:_MESSAGE_LIMIT]))
        token = ctx.bind()
        try:
            result = await self._call(kind, ctx, value)
            if entry.stop_reason == "timeout":  # it swallowed the cancellation: still too late
                return self._timed_out(kind, job)
            return Completed(kind.dump_result(result))
        except asyncio.CancelledError:
            if entry.stop_reason == "cancel":
                return Cancelled()
            if entry.stop_reason == "timeout":
                return self._timed_out(kind, job)
            if entry.stop_reason is None:
                raise
            return None  # lease lost or shutting down: not ours to record
        except Exception as exc:
            return self._failure(kind, job, exc)
        finally:
            Context.unbind(token)

    async def _call(self, kind: JobKind, ctx: Context, value: Any) -> Any:
        args = (ctx,) if kind.input_adapter is None else (ctx, value)
        if kind.is_async:
            return await kind.handler(*args)
        return await _run_in_thread(kind.handler, *args, name=f"longjobs:{ctx.job_id}")

    def _timed_out(self, kind: JobKind, job: Job) -> Failed:
        seconds = job.timeout_seconds or 0.0
        error = RetryableError(f"the attempt exceeded its {seconds:g} s timeout", type="timeout")
        return self._failure(kind, job, error)

    @staticmethod
    def _failure(kind: JobKind, job: Job, exc: BaseException) -> Failed:
        error = error_from_exception(exc)
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        delay = kind.retry.next_delay(
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            retryable=error.retryable,
            retry_after=retry_after,
        )
        if delay is None and error.retryable and job.attempt >= job.max_attempts > 1:
            message = f"{error.type}: {error.message}"[:_MESSAGE_LIMIT]
            error = JobError(type="attempts_exhausted", message=message, retryable=False)
        return Failed(error, retry_in=delay)

    async def _finish(self, entry: _Running, outcome: Outcome) -> None:
        entry.finishing = True
        finish = Finish(entry.job.id, entry.job.attempt, outcome, update=entry.ctx.take_update())
        for delay in (0.5, 1.0, 2.0, 4.0, 8.0):
            try:
                accepted = await self._finishes.submit(finish)
            except StorageUnavailable as exc:
                log.warning("finish of %s failed, retrying: %s", entry.job.id, exc)
                await asyncio.sleep(delay)
                continue
            if not accepted:
                log.warning("lease_lost: the result of %s was not recorded", entry.job.id)
            return
        log.error("giving up recording %s: its lease will expire and it will rerun", entry.job.id)

    # -- cancellation, timeouts and lost leases -------------------------------------------
    def _interrupt(self, job_id: str, reason: str) -> None:
        entry = self.running.get(job_id)
        if entry is not None:
            self._interrupt_entry(entry, reason)

    def _interrupt_entry(self, entry: _Running, reason: str) -> None:
        """Stop a handler: ``cancel`` (asked to), ``timeout``, ``lease_lost``, ``shutdown``."""
        if entry.finishing or entry.stop_reason is not None:
            return
        entry.stop_reason = reason
        if reason == "lease_lost":
            log.warning("lease_lost: %s attempt %d is stopped", entry.job.id, entry.job.attempt)
        entry.watchdog = asyncio.create_task(self._stop_handler(entry, reason))

    async def _stop_handler(self, entry: _Running, reason: str) -> None:
        """Run the cancel callbacks, cancel the task, and when it ignores that for
        ``cancel_grace`` seconds, record the outcome without it and free its slot."""
        await self._run_cancel_callbacks(entry.ctx, reason)
        task = entry.task
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=self.settings.cancel_grace)
        if done or reason not in ("cancel", "timeout") or entry.finishing:
            return
        log.warning(
            "%s ignored its %s for %ss; recording it without waiting",
            entry.job.id,
            reason,
            self.settings.cancel_grace,
        )
        kind = self.app.kinds[entry.job.kind]
        outcome = Cancelled() if reason == "cancel" else self._timed_out(kind, entry.job)
        await self._finish(entry, outcome)
        self._forget(entry)

    @staticmethod
    async def _run_cancel_callbacks(ctx: Context, reason: str) -> None:
        for callback in ctx.request_stop(reason):
            try:
                outcome = callback()
                if outcome is not None:
                    await outcome
            except Exception:
                log.exception("a cancel callback of %s failed", ctx.job_id)

    # -- background loops ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if not self.running:
                continue
            asked = set(self.running)
            try:
                beat = await self.backend.heartbeat(self.id, self.settings.lease_seconds)
            except StorageUnavailable as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            for job_id in asked - beat.held:
                self._interrupt(job_id, "lease_lost")
            for job_id in beat.cancel_requested:
                self._interrupt(job_id, "cancel")

    async def _cancel_loop(self) -> None:
        while True:
            with self.backend.watch_cancel(self.id) as watch:
                if self.running:
                    with contextlib.suppress(StorageUnavailable):
                        for job_id in await self.backend.cancel_requests(self.id):
                            self._interrupt(job_id, "cancel")
                await watch.wait(self.settings.heartbeat_interval)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write every running handler's pending reports now, in one batch."""
        updates = []
        for entry in list(self.running.values()):
            if not entry.finishing and (update := entry.ctx.take_update()) is not None:
                updates.append(update)
        if not updates:
            return
        try:
            lost = await self.backend.append_events(self.id, updates)
        except StorageUnavailable as exc:
            log.warning("progress flush failed: %s", exc)
            return
        for job_id in lost:
            self._interrupt(job_id, "lease_lost")

    async def _sweep_loop(self) -> None:
        while True:
            interval = self.settings.sweep_interval
            await asyncio.sleep(interval * random.uniform(0.75, 1.25))
            try:
                swept = await self.backend.sweep()
            except StorageUnavailable as exc:
                log.warning("sweep failed: %s", exc)
                continue
            if swept.requeued or swept.failed or swept.cancelled:
                log.info("reclaimed expired leases: %s", swept)

    # -- shutdown ------------------------------------------------------------------------
    async def _drain(self) -> None:
        tasks = [e.task for e in self.running.values() if e.task is not None]
        if tasks:
            log.info(
                "waiting up to %ss for %d running job(s)", self.settings.shutdown_grace, len(tasks)
            )
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
        remaining = list(self.running.values())
        if not remaining:
            return
        for entry in remaining:
            self._interrupt(entry.job.id, "shutdown")
        watchdogs = [e.watchdog for e in remaining if e.watchdog is not None]
        if watchdogs:
            await asyncio.wait(watchdogs, timeout=self.settings.cancel_grace)
        await self.flush()
        held = [e.job.id for e in remaining if not e.finishing]
        with contextlib.suppress(StorageUnavailable):
            released = await self.backend.release_jobs(self.id, held)
            log.info("released %d job(s) for other workers", released)


async def _run_in_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """Run a sync handler in a thread of its own, with this task's contextvars.

    Not a pool: a handler that overran its timeout or ignored a cancel keeps its thread (Python
    cannot stop a thread) but must not hold up the next jobs."""
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
            loop.call_soon_threadsafe(settle, functools.partial(future.set_exception, exc))
        else:
            loop.call_soon_threadsafe(settle, functools.partial(future.set_result, result))

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


async def run_worker(
    app: App, *, concurrency: int | None = None, on_ready: Callable[[Worker], None] | None = None
) -> None:
    """Run one worker for ``app`` until it is stopped (used by ``longjobs worker``)."""
    worker = Worker(app, concurrency=concurrency)
    if on_ready is not None:
        on_ready(worker)
    await worker.run()
