"""The worker: claims jobs, runs their handlers with bounded concurrency, reports, finishes.

One worker is a few asyncio tasks in one process:

- ``_claim_loop``     takes up to the free slots in one atomic claim, or sleeps until work is due;
- ``_run_job``        runs one handler and records its outcome (fenced by worker and attempt);
- ``_heartbeat_loop`` renews the leases of the jobs it runs in one statement, independent of the
  handlers; learns of cancel requests and lost leases; stops handlers whose lease it could not
  renew in time (self-fencing), since another worker may take their jobs over;
- ``_cancel_loop``    reacts to cancel requests as soon as the backend signals them;
- ``_flush_loop``     writes the handlers' coalesced reports in one batch per interval;
- ``_sweep_loop``     requeues jobs of dead workers and expires results.

The worker registers itself in the backend (``worker_seen``) when it starts and again with every
heartbeat, busy or idle, for a few heartbeats ahead; a graceful stop removes the registration
(``worker_gone``), and a crashed worker's runs out by itself.

Stopping one handler (cancel, timeout, lost lease, shutdown) runs its ``on_cancel`` callbacks
and interrupts it: an async handler's task is cancelled, a sync handler sees ``ctx.cancelled``.
A handler that is still running ``cancel_grace`` seconds later is recorded without it.

Shutdown (``stop()``, SIGTERM): stop claiming, give running jobs ``shutdown_grace`` seconds, then
interrupt the rest, save their last reports and release their leases at once so another worker
takes them without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable
from typing import Any

from longjobs import ai, metrics
from longjobs.app import App, JobKind
from longjobs.backends.base import Backend, Cancelled, Completed, Failed, Finish, Outcome
from longjobs.batching import Batcher
from longjobs.context import Context
from longjobs.errors import StorageError
from longjobs.execution import (
    MESSAGE_LIMIT,
    RunningJob,
    failure,
    keep_running,
    new_worker_id,
    run_cancel_callbacks,
    start_thread,
    timed_out,
)
from longjobs.follow import stored_text
from longjobs.models import Job, JobError
from longjobs.settings import Settings
from longjobs.webhooks.delivery import Dispatcher

log = logging.getLogger("longjobs.worker")

_IDLE_CLAIM_SECONDS = 1.0  # delayed jobs and retries become due without a notification
_FINISH_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)
_REGISTERED_BEATS = 3  # a registration outlives this many missed heartbeats (plus a second)


def registration_ttl(settings: Settings) -> float:
    """How long one ``worker_seen`` keeps a worker counted alive."""
    return _REGISTERED_BEATS * settings.heartbeat_interval + 1.0


def _count_finish(entry: RunningJob, outcome: Outcome) -> None:
    status = {Completed: "completed", Cancelled: "cancelled"}.get(type(outcome), "failed")
    if isinstance(outcome, Failed) and outcome.retry_in is not None:
        status = "retried"
    metrics.FINISHED.labels(entry.job.kind, status).inc()
    spent_in = entry.ctx.input_tokens - entry.job.usage.input_tokens
    spent_out = entry.ctx.output_tokens - entry.job.usage.output_tokens
    if spent_in > 0:
        metrics.TOKENS.labels(entry.job.kind, "input").inc(spent_in)
    if spent_out > 0:
        metrics.TOKENS.labels(entry.job.kind, "output").inc(spent_out)
    metrics.DURATION.labels(entry.job.kind).observe(time.monotonic() - entry.started)


def _stopped(kind: JobKind, entry: RunningJob) -> Outcome | None:
    """The outcome a stop decides, whatever the handler did after it (None: not ours)."""
    if entry.stop_reason == "cancel":
        return Cancelled()
    if entry.stop_reason == "timeout":
        return timed_out(kind, entry.job)
    return None


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
        self.running: dict[str, RunningJob] = {}
        self.abandoned_threads = 0
        """Threads of sync handlers recorded without them, still running: they take slots."""
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._backend: Backend | None = None
        self._finishes: Batcher[Finish, bool] = Batcher(self._finish_batch)
        self._flushing: asyncio.Future[None] | None = None  # done when the flush in flight is
        self._dispatcher: Dispatcher | None = None

    async def _finish_batch(self, finishes: list[Finish]) -> list[bool]:
        accepted = await self.backend.finish_jobs(self.id, finishes)
        if self._dispatcher is not None:
            self._dispatcher.poke()  # their webhooks, if any, are due now
        return accepted

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the worker is not running")
        return self._backend

    def stop(self) -> None:
        """Begin a graceful shutdown; ``run()`` returns when it is complete."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and run jobs until ``stop()``; then shut down gracefully. Cancelling ``run()``
        shuts down at once: running handlers are interrupted and their jobs released."""
        self._backend = await self.app.open()
        loops = [self._heartbeat_loop, self._cancel_loop, self._flush_loop, self._sweep_loop]
        if self.settings.webhook_delivery:
            self._dispatcher = Dispatcher(
                self._backend, self.settings, owner=self.id, resolver=self.app.webhook_resolver
            )
            loops.append(self._dispatcher.run)
        helpers = [asyncio.create_task(keep_running(loop, loop.__name__)) for loop in loops]
        log.info(
            "worker %s started: kinds=%s concurrency=%d", self.id, self.kinds, self.concurrency
        )
        try:
            await self.register()
            await self._claim_loop()
            await self._drain(self.settings.shutdown_grace)
        except asyncio.CancelledError:
            self._stopping.set()
            await self._drain(0.0)
            raise
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.deregister()  # after the heartbeat loop: nothing registers it again
            await ai.aclose()  # the upstream connections its handlers opened
            log.info("worker %s stopped", self.id)

    # -- claiming ------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.concurrency - len(self.running) - self.abandoned_threads

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.free_slots
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
            except StorageError as exc:
                log.warning("claim failed, retrying: %s", exc)
                await self._until_stopping(asyncio.sleep(getattr(exc, "retry_after", 1.0)))
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
        entry = RunningJob(
            job=job,
            kind=self.app.kinds.get(job.kind),
            ctx=Context(
                job,
                deadline_ts=deadline,
                reader=functools.partial(stored_text, self.backend, job.tenant, job.id),
            ),
            lease_renewed_at=time.monotonic(),
            started=time.monotonic(),
        )
        self.running[job.id] = entry
        metrics.RUNNING.inc()
        if job.started_at is not None and job.run_at is not None:
            wait = (job.started_at - job.run_at).total_seconds()
            metrics.QUEUE_WAIT.labels(job.kind).observe(max(0.0, wait))
        entry.task = asyncio.create_task(self._run_job(entry), name=f"longjobs:{job.id}")
        if timeout:
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(timeout, self._interrupt_entry, entry, "timeout")

    # -- running one job -----------------------------------------------------------------
    async def _run_job(self, entry: RunningJob) -> None:
        try:
            if entry.kind is None:
                message = f"no handler for {entry.job.kind!r}"
                outcome: Outcome | None = Failed(JobError(type="unknown_kind", message=message))
            else:
                outcome = await self._outcome_of(entry.kind, entry)
            if outcome is not None and not entry.finishing:
                await self._finish(entry, outcome)
            elif outcome is None and entry.stop_reason == "shutdown":
                await self._save_reports(entry)
        finally:
            if entry.timer is not None:
                entry.timer.cancel()
            metrics.RUNNING.dec()
            self._forget(entry)

    def _forget(self, entry: RunningJob) -> None:
        if self.running.get(entry.job.id) is entry:
            del self.running[entry.job.id]
            self._slot_freed.set()

    async def _save_reports(self, entry: RunningJob) -> None:
        """Keep what an interrupted handler reported last (its checkpoint above all)."""
        update = entry.ctx.take_update()
        if update is not None:
            with contextlib.suppress(StorageError):
                await self.backend.append_events(self.id, [update])

    async def _outcome_of(self, kind: JobKind, entry: RunningJob) -> Outcome | None:
        job, ctx = entry.job, entry.ctx
        try:
            value = kind.load_input(job.input)
        except Exception as exc:
            return Failed(JobError(type="invalid_input", message=str(exc)[:MESSAGE_LIMIT]))
        token = ctx.bind()
        try:
            result = await self._call(kind, entry, value)
            # Stopped, but it returned (swallowed the cancellation, or a sync handler that saw
            # ctx.cancelled): a requested cancel or an overrun deadline still decides.
            return _stopped(kind, entry) or kind.complete(result)
        except asyncio.CancelledError:
            if entry.stop_reason is None:
                raise
            return _stopped(kind, entry)  # None: lease lost or shutting down, not ours to record
        except Exception as exc:
            return _stopped(kind, entry) or failure(kind, job, exc)
        finally:
            Context.unbind(token)

    async def _call(self, kind: JobKind, entry: RunningJob, value: Any) -> Any:
        args = (entry.ctx,) if kind.input_adapter is None else (entry.ctx, value)
        if kind.is_async:
            return await kind.handler(*args)
        entry.thread = start_thread(kind.handler, *args, name=f"longjobs:{entry.job.id}")
        # Shielded: a stop does not abandon the thread at once, it waits for it (see _stop).
        return await asyncio.shield(entry.thread)

    async def _finish(self, entry: RunningJob, outcome: Outcome) -> None:
        """Record the outcome, retrying while the store is unavailable. If it cannot be recorded
        the lease is given back (or left to expire), so the job runs again: never lost."""
        entry.finishing = True
        job = entry.job
        if (flushing := self._flushing) is not None:
            # A flush in flight may carry this job's earlier reports: it must land first (with
            # a pool of connections, this finish could otherwise commit before it).
            await asyncio.shield(flushing)
        finish = Finish(job.id, job.attempt, outcome, update=entry.ctx.take_update())
        for delay in _FINISH_RETRIES:
            try:
                accepted = await self._finishes.submit(finish)
            except StorageError as exc:
                log.warning("finish of %s failed, retrying: %s", job.id, exc)
                await asyncio.sleep(delay)
                continue
            except Exception:
                log.exception("finish of %s failed", job.id)
                break
            if not accepted:
                log.warning("lease_lost: the result of %s was not recorded", job.id)
            else:
                _count_finish(entry, outcome)
            return
        log.error("could not record %s: releasing it to run again", job.id)
        with contextlib.suppress(Exception):
            await self.backend.release_jobs(self.id, [job.id])

    # -- stopping handlers: cancel, timeout, lost lease, shutdown -------------------------
    def _interrupt(self, job_id: str, reason: str) -> None:
        entry = self.running.get(job_id)
        if entry is not None:
            self._interrupt_entry(entry, reason)

    def _interrupt_entry(self, entry: RunningJob, reason: str) -> None:
        if entry.finishing or entry.stop_reason is not None:
            return
        entry.stop_reason = reason
        if reason in ("lease_lost", "lease_unrenewable"):
            log.warning("%s: %s attempt %d is stopped", reason, entry.job.id, entry.job.attempt)
        entry.watchdog = asyncio.create_task(self._stop(entry, reason))

    async def _stop(self, entry: RunningJob, reason: str) -> None:
        """Callbacks first (up to half the grace), then the interruption; a handler still
        running when the grace is over is recorded (cancel, timeout) or left (lease lost,
        shutdown: the job is not ours any more) without it."""
        grace = self.settings.cancel_grace
        callbacks = asyncio.ensure_future(
            run_cancel_callbacks(entry.ctx.request_stop(reason), entry.job.id)
        )
        await asyncio.wait([callbacks], timeout=grace / 2)
        task = entry.task
        if task is None or task.done() or entry.finishing:
            return
        if not entry.is_sync:  # a sync handler's thread sees ctx.cancelled instead
            task.cancel()
        await asyncio.wait([task], timeout=grace / 2)
        callbacks.cancel()
        if task.done() or entry.finishing:
            return
        log.warning("%s ignored its %s for %ss; going on without it", entry.job.id, reason, grace)
        if reason in ("cancel", "timeout") and entry.kind is not None:
            outcome = Cancelled() if reason == "cancel" else timed_out(entry.kind, entry.job)
            await self._finish(entry, outcome)
        self._forget(entry)
        if entry.thread is not None and not entry.thread.done():
            self.abandoned_threads += 1
            entry.thread.add_done_callback(self._thread_ended)

    def _thread_ended(self, _: asyncio.Future[Any]) -> None:
        self.abandoned_threads -= 1
        self._slot_freed.set()

    # -- background loops ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if self.running:
                await self.heartbeat()
            await self.register()

    async def register(self) -> None:
        """Tell the backend this worker is alive for a few heartbeats more (one small write)."""
        try:
            await self.backend.worker_seen(self.id, ttl_seconds=registration_ttl(self.settings))
        except StorageError as exc:
            log.warning("registration failed: %s", exc)

    async def deregister(self) -> None:
        """Remove this worker's registration. Whatever goes wrong (the store unavailable, or
        closed already by the code that ran the worker), it runs out by itself."""
        try:
            await self.backend.worker_gone(self.id)
        except Exception as exc:
            log.debug("could not remove the registration of %s: %r", self.id, exc)

    async def heartbeat(self) -> None:
        """Renew the leases of the running jobs; stop those whose lease is lost, asked to
        cancel, or could not be renewed before it runs out (another worker may have it)."""
        asked = {job_id: e for job_id, e in self.running.items() if not e.finishing}
        started = time.monotonic()
        try:
            beat = await self.backend.heartbeat(self.id, list(asked), self.settings.lease_seconds)
        except StorageError as exc:
            log.warning("heartbeat failed: %s", exc)
            self._fence_unrenewed_leases()
            return
        for job_id, entry in asked.items():
            if job_id in beat.held:
                entry.lease_renewed_at = started
            else:
                self._interrupt_entry(entry, "lease_lost")
        for job_id in beat.cancel_requested:
            self._interrupt(job_id, "cancel")

    def _fence_unrenewed_leases(self) -> None:
        margin = min(1.0, self.settings.lease_seconds / 5)
        limit = time.monotonic() - (self.settings.lease_seconds - margin)
        for entry in list(self.running.values()):
            if entry.lease_renewed_at < limit:
                self._interrupt_entry(entry, "lease_unrenewable")

    async def _cancel_loop(self) -> None:
        while True:
            with self.backend.watch_cancel(self.id) as watch:
                if self.running:
                    with contextlib.suppress(StorageError):
                        for job_id in await self.backend.cancel_requests(self.id):
                            self._interrupt(job_id, "cancel")
                await watch.wait(self.settings.heartbeat_interval)

    async def _flush_loop(self) -> None:
        """Flush every ``flush_interval`` from the start of the last flush (a slow write does
        not stretch the rhythm), or at once when the last one took longer than that."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.settings.flush_interval
            await self.flush()
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def flush(self) -> None:
        """Write every running handler's pending reports now, in one batch."""
        updates = []
        for entry in list(self.running.values()):
            if not entry.finishing and (update := entry.ctx.take_update()) is not None:
                updates.append(update)
        if not updates:
            return
        done = self._flushing = asyncio.get_running_loop().create_future()
        try:
            lost = await self.backend.append_events(self.id, updates)
        except StorageError as exc:
            log.warning("progress flush failed: %s", exc)
            return
        finally:
            done.set_result(None)
            if self._flushing is done:
                self._flushing = None
        for job_id in lost:
            self._interrupt(job_id, "lease_lost")

    async def _sweep_loop(self) -> None:
        while True:
            interval = self.settings.sweep_interval
            await asyncio.sleep(interval * random.uniform(0.75, 1.25))
            try:
                swept = await self.backend.sweep()
            except StorageError as exc:
                log.warning("sweep failed: %s", exc)
                continue
            if swept.requeued or swept.failed or swept.cancelled:
                log.info("reclaimed expired leases: %s", swept)

    # -- shutdown ------------------------------------------------------------------------
    async def _drain(self, grace: float) -> None:
        tasks = [e.task for e in self.running.values() if e.task is not None]
        if tasks and grace > 0:
            log.info("waiting up to %ss for %d running job(s)", grace, len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        remaining = list(self.running.values())
        if not remaining:
            return
        for entry in remaining:
            self._interrupt_entry(entry, "shutdown")
        watchdogs = [e.watchdog for e in remaining if e.watchdog is not None]
        if watchdogs:
            await asyncio.wait(watchdogs, timeout=self.settings.cancel_grace)
        await self.flush()
        held = [e.job.id for e in remaining if not e.finishing]
        with contextlib.suppress(StorageError):
            released = await self.backend.release_jobs(self.id, held)
            log.info("released %d job(s) for other workers", released)
