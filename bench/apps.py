"""The job kinds the benchmarks run (importable as ``bench.apps:app`` by worker processes)."""

from __future__ import annotations

import asyncio

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
