"""The job kinds the schemathesis run submits: ``tests.acceptance.apps.schema_app:app``.

Real input schemas, so that generated bodies reach the handlers: the README's two kinds from
``examples.docs``, plus kinds that end in each other way a job can end (failed, or still running
when it is read or cancelled) and one that takes no input. Every handler is quick or sleeps: the
run submits hundreds of jobs to one ``longjobs serve`` on a small machine.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from examples.docs import analyze_document, classify_batch
from longjobs import App, Context, PermanentError

app = App()
app.job(analyze_document)
app.job(classify_batch)


class NapIn(BaseModel):
    """How long to sleep, reporting progress along the way."""

    model_config = ConfigDict(extra="forbid")

    seconds: Annotated[float, Field(ge=0, le=2)]
    stage: Annotated[str, Field(max_length=100)] = "napping"


class NapOut(BaseModel):
    slept: float


@app.job(max_attempts=1)
async def nap(ctx: Context, params: NapIn) -> NapOut:
    """Sleeps up to two seconds in ten steps: long enough to be seen running and cancelled."""
    for step in range(1, 11):
        await asyncio.sleep(params.seconds / 10)
        await ctx.progress(step / 10, stage=params.stage, message=f"step {step} of 10")
    return NapOut(slept=params.seconds)


class FailIn(BaseModel):
    """How the job should fail."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500)]
    code: Literal["bad_document", "quota_exceeded", "upstream_refused"] = "bad_document"


@app.job(max_attempts=1)
async def fail(ctx: Context, params: FailIn) -> None:
    """Fails at once with a permanent error, so its result answers 409 with the error."""
    raise PermanentError(params.reason, type=params.code)


@app.job
async def ping(ctx: Context) -> dict[str, bool]:
    """Takes no input and answers at once."""
    return {"pong": True}
