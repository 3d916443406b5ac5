"""The acceptance tests' job kinds: ``tests.acceptance.apps.chaos_app:app``.

Every attempt leaves lines in an effect ledger, the file named by ``LEDGER_PATH``: one JSON object
per line, written with ``O_APPEND`` and fsynced, so a line survives the SIGKILL of its writer and
the checker can tell attempts that ran (``start``), finished their work (``end``) or cleaned up
after a cancellation (``cleanup``) from what the store recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from longjobs import App, Context, RetryPolicy
from tests.acceptance.ledger import append_line

app = App()


class LedgerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1, le=10_000)
    step_ms: int = Field(ge=0, le=60_000)


class SleepyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=3600)


def _record(ctx: Context, event: str, **fields: Any) -> None:
    path = os.environ.get("LEDGER_PATH")
    if path:
        line = {
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "event": event,
            "t": time.time(),
            **fields,
        }
        append_line(path, line)


def _resume_point(ctx: Context) -> int:
    state = ctx.checkpoint_state
    if isinstance(state, dict) and isinstance(state.get("step"), int):
        return int(state["step"])
    return 0


# Enough attempts that a job hit by several SIGKILLs in a row still completes.
@app.job(max_attempts=10)
async def ledger_job(ctx: Context, params: LedgerIn) -> dict[str, Any]:
    """Steps of ``step_ms`` each, resuming after the last checkpointed step; ledgered."""
    resumed_from = _resume_point(ctx)
    _record(ctx, "start", resumed_from=resumed_from)
    for step in range(resumed_from, params.steps):
        await asyncio.sleep(params.step_ms / 1000)
        done = step + 1
        await ctx.progress(
            done / params.steps, stage="stepping", message=f"step {done} of {params.steps}"
        )
        await ctx.checkpoint({"step": done})
    _record(ctx, "end", resumed_from=resumed_from)
    return {
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "resumed_from": resumed_from,
    }


class ChattyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: int = Field(ge=1, le=10_000)
    interval_ms: int = Field(ge=0, le=60_000)


@app.job
async def chatty(ctx: Context, params: ChattyIn) -> dict[str, Any]:
    """Logs ``line N`` for N in 0..lines-1, one event each, every ``interval_ms``; checkpoints
    after each line, so a later attempt goes on after the last line stored (none twice)."""
    resumed_from = _resume_point(ctx)
    for number in range(resumed_from, params.lines):
        await ctx.log(f"line {number}", number=number)
        await ctx.checkpoint({"step": number + 1})
        await asyncio.sleep(params.interval_ms / 1000)
    return {"lines": params.lines, "attempt": ctx.attempt, "resumed_from": resumed_from}


class LargeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kilobytes: int = Field(ge=1, le=64 * 1024)


@app.job
async def large_result(ctx: Context, params: LargeIn) -> dict[str, Any]:
    """Returns a result of about ``kilobytes`` KiB (over the inline limit when large enough)."""
    return {"text": "x" * (params.kilobytes * 1024)}


@app.job
async def sleepy(ctx: Context, params: SleepyIn) -> dict[str, Any]:
    """Sleeps; a cancellation is cleaned up twice over: ``ctx.on_cancel`` and ``finally``."""

    def on_cancel() -> None:
        _record(ctx, "cleanup", via="on_cancel")

    ctx.on_cancel(on_cancel)
    _record(ctx, "start")
    cancelled = False
    try:
        await asyncio.sleep(params.seconds)
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if cancelled:
            _record(ctx, "cleanup", via="finally")
    return {"slept": params.seconds, "attempt": ctx.attempt}


@app.job
async def save_on_stop(ctx: Context, params: SleepyIn) -> dict[str, Any]:
    """Sleeps; when interrupted it checkpoints ``{"saved_on_stop": true}`` before it stops, and
    a later attempt returns the checkpoint it resumed from."""
    resumed_from = ctx.checkpoint_state
    _record(ctx, "start", resumed_from=resumed_from)
    try:
        await asyncio.sleep(params.seconds)
    except asyncio.CancelledError:
        await ctx.checkpoint({"saved_on_stop": True, "attempt": ctx.attempt})
        _record(ctx, "cleanup", via="except")
        raise
    return {"resumed_from": resumed_from, "attempt": ctx.attempt}


# No backoff between attempts: the retry is due at once, so tests see it quickly.
@app.job(retry=RetryPolicy(base_delay=0.0, jitter=False))
async def crash(ctx: Context) -> None:
    """Always fails with a plain ValueError (a handler fault, retryable by default)."""
    _record(ctx, "start")
    raise ValueError("boom")


@app.job(max_attempts=2)
async def exit_process(ctx: Context) -> None:
    """A poison job: takes its whole worker process down with it, on every attempt."""
    _record(ctx, "start")
    os._exit(1)


class FloodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    megabytes: int = Field(ge=1, le=64)


@app.job
async def flood(ctx: Context, params: FloodIn) -> None:
    """Streams ``megabytes`` of output at once, then waits to be cancelled (a stream stays open)."""
    chunk = "x" * (256 * 1024)
    for _ in range(params.megabytes * 4):
        await ctx.output(delta=chunk)
        await asyncio.sleep(0.06)  # one event per flush
    await asyncio.sleep(3600)
