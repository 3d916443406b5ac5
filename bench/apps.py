"""The job kinds the benchmarks run (importable as ``bench.apps:app`` by worker processes)."""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, Field

from longjobs import App, Context

app = App()

ITEMS = 1_000_000


@app.job(max_attempts=1)
async def noop(ctx: Context) -> None:
    """Does nothing: measures the queue itself."""


@app.job(max_attempts=1)
async def sleep2(ctx: Context) -> None:
    """Waits 2 s on I/O, like a model call."""
    await asyncio.sleep(2)


def per_item_work(i: int) -> int:
    """A small per-item step of a batch job: format and split one line."""
    return len(f"item {i} of the batch: classify this short text".split())


@app.job(max_attempts=1)
async def batch_with_progress(ctx: Context) -> int:
    """One million items, reporting progress after every one."""
    total = 0
    for i in range(ITEMS):
        total += per_item_work(i)
        await ctx.progress((i + 1) / ITEMS, stage="classifying")
    return total


@app.job(max_attempts=1)
async def batch_without_progress(ctx: Context) -> int:
    """The same million items, silently."""
    total = 0
    for i in range(ITEMS):
        total += per_item_work(i)
    return total


class Ticks(BaseModel):
    """How long ``emit_progress`` runs and how often it reports."""

    seconds: float = Field(25.0, gt=0, le=3600)
    per_second: float = Field(5.0, gt=0, le=100)


@app.job(max_attempts=1)
async def emit_progress(ctx: Context, ticks: Ticks) -> None:
    """Reports progress ``per_second`` times a second for ``seconds``, like a long model call
    reporting its steps. It starts at a random phase, so that many jobs started together do not
    all report in the same instant."""
    interval = 1.0 / ticks.per_second
    steps = max(1, round(ticks.seconds * ticks.per_second))
    await asyncio.sleep(random.uniform(0.0, interval))
    for step in range(1, steps + 1):
        await ctx.progress(step / steps, message=f"step {step} of {steps}")
        await asyncio.sleep(interval)
