"""The handle a running handler gets, and ``current()`` to reach it from anywhere inside one.

Reports are cheap by design: ``progress``, ``output``, ``log`` and ``usage`` only update memory and
return at once; the worker writes what changed in one batched, fenced transaction every flush
interval, so a handler may report a million times a second without flooding the store, and the
last value is always written before the job finishes. The methods return an already-finished
awaitable, so ``await ctx.progress(...)`` reads naturally in async handlers while sync handlers
(which run in a thread) simply call ``ctx.progress(...)``.
"""

from __future__ import annotations

import contextvars
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime
from typing import Any, cast

from longjobs.backends.base import JobUpdate
from longjobs.models import JSON, Job, utc_from_timestamp

_current: contextvars.ContextVar[Context] = contextvars.ContextVar("longjobs_context")


class _Done:
    """An awaitable that is already finished: what the reporting methods return."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        return _EXHAUSTED  # an exhausted iterator ends the await at once, and can be shared


_EXHAUSTED = cast("Generator[Any, Any, None]", iter(()))
_DONE = _Done()

CancelCallback = Callable[[], Awaitable[None] | None]


def _json_checked(value: JSON, what: str) -> JSON:
    """``value`` if it can be stored as JSON; else TypeError here, in the handler's own call,
    rather than later in the worker's batched write."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = f"{what} must be JSON (dicts, lists, str, numbers, bools, None): {exc}"
        raise TypeError(message) from None
    return value


def _clamped(fraction: float) -> float:
    if math.isinf(fraction):
        raise ValueError("progress must be a finite number")
    return 1.0


def current() -> Context:
    """The Context of the job running in this task or thread.

    Raises LookupError outside a handler.

    >>> from longjobs.context import current
    >>> async def deep_inside():
    ...     await current().progress(0.5, stage="half way")
    """
    return _current.get()


class Context:
    """What a running handler can see and report. Created by the worker, one per attempt."""

    __slots__ = (
        "_cancel_callbacks",
        "_checkpoint",
        "_checkpoint_dirty",
        "_dirty",
        "_events",
        "_lock",
        "_output_data",
        "_output_delta",
        "_progress",
        "_progress_base",
        "_progress_dirty",
        "_progress_placed",
        "_reader",
        "_started",
        "_stopping",
        "_usage_dirty",
        "_usage_placed",
        "cancel_reason",
        "deadline_ts",
        "eta_seconds",
        "input_tokens",
        "job",
        "message",
        "output_tokens",
        "stage",
    )

    def __init__(
        self,
        job: Job,
        *,
        deadline_ts: float | None = None,
        reader: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.job = job
        self._reader = reader
        self.deadline_ts = deadline_ts
        self._started = time.monotonic()
        self._progress = job.progress
        self._progress_base = job.progress
        self.stage: str | None = job.stage
        self.message: str | None = job.message
        self.eta_seconds: float | None = None
        self.input_tokens = job.usage.input_tokens
        self.output_tokens = job.usage.output_tokens
        self._checkpoint: tuple[JSON] | None = None
        self._checkpoint_dirty = False
        self._events: list[tuple[str, dict[str, JSON]]] = []
        self._output_delta: list[str] = []
        self._output_data: tuple[JSON] | None = None
        self._dirty = False
        self._progress_dirty = False
        self._progress_placed = False
        self._usage_dirty = False
        self._usage_placed = False
        self._lock = threading.Lock()
        self._stopping = False
        self._cancel_callbacks: list[CancelCallback] = []
        self.cancel_reason: str | None = None

    # -- what the handler reads ------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, and so on."""
        return self.job.attempt

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts of this job: use it (plus an effect name) for external side
        effects so a retried attempt does not repeat them. Delivery is at-least-once."""
        return self.job.id

    def effect_key(self, name: str) -> str:
        """An idempotency key for one named side effect of this job, the same on every attempt."""
        return f"{self.job.id}:{name}"

    @property
    def deadline(self) -> datetime | None:
        """When this attempt will be stopped for exceeding the kind's timeout (UTC), if any."""
        return utc_from_timestamp(self.deadline_ts)

    @property
    def checkpoint_state(self) -> JSON:
        """The last state saved with ``checkpoint()``, by this attempt or an earlier one."""
        return self._checkpoint[0] if self._checkpoint is not None else self.job.checkpoint

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested or the deadline passed; sync handlers poll it."""
        return self._stopping

    @property
    def progress_value(self) -> float:
        return self._progress

    async def stored_output(self) -> str:
        """The text of every ``output(delta=)`` stored for this job so far, earlier attempts
        included: exactly what stream clients have seen. A retried attempt that continues a
        generation starts from it (``longjobs.ai`` does), so nobody sees text twice."""
        return "" if self._reader is None else await self._reader()

    # -- what the handler reports ----------------------------------------------------------
    def progress(
        self, fraction: float, *, stage: str | None = None, message: str | None = None
    ) -> Awaitable[None]:
        """Report progress in [0, 1] (clamped, and never lower than before in this attempt),
        optionally with a stage name and a message. The ETA is derived from the rate so far."""
        if fraction > self._progress:
            self._progress = fraction if fraction <= 1.0 else _clamped(fraction)
        elif fraction != fraction or fraction == -math.inf:  # NaN, -inf
            raise ValueError("progress must be a finite number")
        if stage is not None:
            self.stage = stage if type(stage) is str else str(stage)
        if message is not None:
            self.message = message if type(message) is str else str(message)
        self._progress_dirty = True
        self._dirty = True
        return _DONE

    def log(self, message: str, *, level: str = "info", **fields: JSON) -> Awaitable[None]:
        """Append a log line to the job's event log (every line is kept)."""
        entry = {"level": str(level), "message": str(message), **fields}
        if fields:
            _json_checked(fields, "log fields")
        with self._lock:
            self._place_coalesced()  # what was reported before this line comes before it
            self._events.append(("log", entry))
        self._dirty = True
        return _DONE

    def output(self, *, delta: str | None = None, data: JSON = None) -> Awaitable[None]:
        """Publish partial output: text ``delta``s are concatenated per flush; for ``data``
        (a JSON snapshot of the partial result) the latest value per flush is kept."""
        if delta is None and data is None:
            raise ValueError("output() needs delta= or data=")
        if delta is not None and not isinstance(delta, str):
            raise TypeError("output(delta=) must be a str")
        if data is not None:
            _json_checked(data, "output(data=)")
        with self._lock:
            if delta is not None:
                self._output_delta.append(delta)
            if data is not None:
                self._output_data = (data,)
        self._dirty = True
        return _DONE

    def usage(self, *, input_tokens: int = 0, output_tokens: int = 0) -> Awaitable[None]:
        """Add model tokens spent; the job's usage is the running total."""
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)
        self._usage_dirty = True
        self._dirty = True
        return _DONE

    def checkpoint(self, state: JSON) -> Awaitable[None]:
        """Save JSON state that a retried attempt reads back from ``checkpoint_state``."""
        _json_checked(state, "checkpoint state")
        with self._lock:
            self._checkpoint = (state,)
            self._checkpoint_dirty = True
        self._dirty = True
        return _DONE

    def on_cancel(self, callback: CancelCallback) -> None:
        """Run ``callback`` (sync or async) as soon as cancellation starts, before the task is
        interrupted: close an upstream stream, stop a subprocess, release a resource."""
        self._cancel_callbacks.append(callback)

    # -- used by the worker ----------------------------------------------------------------
    def request_stop(self, reason: str) -> list[CancelCallback]:
        """Mark this attempt as stopping; returns the callbacks to run (once)."""
        if self._stopping:
            return []
        self.cancel_reason = reason
        self._stopping = True
        callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        return callbacks

    def bind(self) -> contextvars.Token[Context]:
        return _current.set(self)

    @staticmethod
    def unbind(token: contextvars.Token[Context]) -> None:
        _current.reset(token)

    def take_update(self) -> JobUpdate | None:
        """What changed since the last call, as one coalesced update (None when nothing did).

        Events keep the order of the calls that made them, except that the progress, output
        and usage reported between two log lines come out as (at most) one event each.
        """
        if not self._dirty:
            return None
        self._dirty = False
        update = JobUpdate(job_id=self.job.id, attempt=self.job.attempt)
        with self._lock:
            self._place_coalesced()
            events, self._events = self._events, []
            if self._checkpoint_dirty and self._checkpoint is not None:
                self._checkpoint_dirty = False
                update.checkpoint, update.has_checkpoint = self._checkpoint[0], True
            if self._progress_placed:
                self._progress_placed = False
                update.progress, update.stage = self._progress, self.stage
                update.message, update.eta_seconds = self.message, self.eta_seconds
            if self._usage_placed:
                self._usage_placed = False
                update.input_tokens, update.output_tokens = self.input_tokens, self.output_tokens
        update.events = events
        return update

    def _place_coalesced(self) -> None:
        """Turn the pending progress, output and usage into events, in that order (lock held)."""
        if self._progress_dirty:
            self._progress_dirty = False
            self._progress_placed = True
            self.eta_seconds = self._estimate_eta()
            self._events.append(("progress", self._progress_event()))
        if self._output_delta:
            self._events.append(("output", {"delta": "".join(self._output_delta)}))
            self._output_delta = []
        if self._output_data is not None:
            self._events.append(("output", {"data": self._output_data[0]}))
            self._output_data = None
        if self._usage_dirty:
            self._usage_dirty = False
            self._usage_placed = True
            usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
            self._events.append(("usage", usage))

    def _progress_event(self) -> dict[str, JSON]:
        return {
            "progress": self._progress,
            "stage": self.stage,
            "message": self.message,
            "eta_seconds": self.eta_seconds,
        }

    def _estimate_eta(self) -> float | None:
        done = self._progress - self._progress_base
        if done <= 0.0:
            return None
        if self._progress >= 1.0:
            return 0.0
        elapsed = time.monotonic() - self._started
        return round(elapsed * (1.0 - self._progress) / done, 3)
