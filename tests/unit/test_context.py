"""Context: what a handler reports is coalesced in memory into one update per flush."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from longjobs.backends.base import JobUpdate
from longjobs.context import Context, current
from longjobs.models import Job, Status, Usage, new_job_id


def running_job(**fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": new_job_id(),
        "tenant": "acme",
        "kind": "summarize",
        "status": Status.RUNNING,
        "created_at": datetime.now(UTC),
        "attempt": 1,
    }
    return Job(**(values | fields))


def take(ctx: Context) -> JobUpdate:
    update = ctx.take_update()
    assert update is not None
    return update


def events_of(update: JobUpdate, kind: str) -> list[dict[str, Any]]:
    return [data for event_type, data in update.events if event_type == kind]


# -- progress --------------------------------------------------------------------------------


def test_progress_is_clamped_to_one() -> None:
    ctx = Context(running_job())

    ctx.progress(1.7)

    assert ctx.progress_value == 1.0
    assert take(ctx).progress == 1.0


def test_progress_never_goes_backwards() -> None:
    ctx = Context(running_job())

    ctx.progress(0.6)
    ctx.progress(0.2)
    ctx.progress(-3.0)

    assert ctx.progress_value == 0.6
    assert take(ctx).progress == 0.6


def test_progress_starts_from_where_the_previous_attempt_left_it() -> None:
    ctx = Context(running_job(progress=0.4, attempt=2))

    ctx.progress(0.1)

    assert ctx.progress_value == 0.4


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_progress_rejects_values_that_are_not_finite(bad: float) -> None:
    ctx = Context(running_job())
    ctx.progress(0.3)
    take(ctx)

    with pytest.raises(ValueError, match="finite"):
        ctx.progress(bad)

    assert ctx.progress_value == 0.3
    assert ctx.take_update() is None


def test_a_hundred_thousand_progress_calls_make_one_update_with_the_last_value() -> None:
    ctx = Context(running_job())

    for n in range(1, 100_001):
        ctx.progress(n / 100_000, stage=f"step {n}")

    update = take(ctx)
    assert update.progress == 1.0
    assert update.stage == "step 100000"
    [event] = events_of(update, "progress")
    assert (event["progress"], event["stage"]) == (1.0, "step 100000")
    assert [t for t, _ in update.events] == ["progress"]
    assert ctx.take_update() is None


def test_stage_and_message_are_kept_until_changed() -> None:
    ctx = Context(running_job())

    ctx.progress(0.1, stage="reading", message="page 1")
    ctx.progress(0.2, message="page 2")

    update = take(ctx)
    assert (update.stage, update.message) == ("reading", "page 2")


# -- other reports ---------------------------------------------------------------------------


def test_every_log_line_is_kept_in_order() -> None:
    ctx = Context(running_job())

    for n in range(1000):
        ctx.log(f"line {n}", level="debug", n=n)

    logs = events_of(take(ctx), "log")
    assert logs == [{"level": "debug", "message": f"line {n}", "n": n} for n in range(1000)]


def test_output_deltas_are_concatenated_into_one_event() -> None:
    ctx = Context(running_job())

    for word in ["The ", "quick ", "brown ", "fox"]:
        ctx.output(delta=word)

    assert events_of(take(ctx), "output") == [{"delta": "The quick brown fox"}]


def test_output_data_keeps_only_the_latest_snapshot() -> None:
    ctx = Context(running_job())

    ctx.output(data={"rows": 1})
    ctx.output(data={"rows": 2})

    assert events_of(take(ctx), "output") == [{"data": {"rows": 2}}]


def test_output_needs_a_delta_or_data() -> None:
    ctx = Context(running_job())

    with pytest.raises(ValueError, match="delta"):
        ctx.output()


def test_usage_reports_running_totals() -> None:
    ctx = Context(running_job(usage=Usage(input_tokens=100, output_tokens=10)))

    ctx.usage(input_tokens=50)
    ctx.usage(input_tokens=25, output_tokens=5)

    update = take(ctx)
    assert (update.input_tokens, update.output_tokens) == (175, 15)
    assert events_of(update, "usage") == [{"input_tokens": 175, "output_tokens": 15}]


def test_a_checkpoint_is_sent_once_and_stays_readable() -> None:
    ctx = Context(running_job(checkpoint={"page": 0}))
    assert ctx.checkpoint_state == {"page": 0}

    ctx.checkpoint({"page": 1})
    ctx.checkpoint({"page": 2})
    first = take(ctx)
    ctx.log("after the checkpoint")
    second = take(ctx)

    assert (first.has_checkpoint, first.checkpoint) == (True, {"page": 2})
    assert (second.has_checkpoint, second.checkpoint) == (False, None)
    assert ctx.checkpoint_state == {"page": 2}


def test_nothing_reported_means_no_update() -> None:
    ctx = Context(running_job())

    assert ctx.take_update() is None


def test_an_update_is_fenced_by_job_and_attempt() -> None:
    job = running_job(attempt=3)
    ctx = Context(job)

    ctx.log("hello")

    update = take(ctx)
    assert (update.job_id, update.attempt) == (job.id, 3)


async def test_reports_can_be_awaited_in_async_handlers() -> None:
    ctx = Context(running_job())

    await ctx.progress(0.5)
    await ctx.log("awaited")
    await ctx.output(delta="x")
    await ctx.usage(input_tokens=1)
    await ctx.checkpoint({"k": 1})

    update = take(ctx)
    assert sorted(t for t, _ in update.events) == ["log", "output", "progress", "usage"]
    assert update.has_checkpoint


async def test_reports_are_plain_calls_in_sync_handlers() -> None:
    ctx = Context(running_job())

    def sync_handler() -> None:
        for n in range(10):
            ctx.progress(n / 10)
            ctx.log(f"line {n}")

    await asyncio.to_thread(sync_handler)

    update = take(ctx)
    assert update.progress == 0.9
    assert len(events_of(update, "log")) == 10


# -- ETA -------------------------------------------------------------------------------------


def test_eta_is_derived_from_the_rate_so_far() -> None:
    ctx = Context(running_job())
    time.sleep(0.02)

    ctx.progress(0.5)
    update = take(ctx)

    assert update.eta_seconds is not None
    assert update.eta_seconds > 0
    assert events_of(update, "progress")[0]["eta_seconds"] == update.eta_seconds


def test_eta_is_zero_when_done_and_unknown_before_any_progress() -> None:
    ctx = Context(running_job())
    ctx.progress(0.0)
    assert take(ctx).eta_seconds is None

    ctx.progress(1.0)

    assert take(ctx).eta_seconds == 0.0


# -- current(), cancellation, keys -----------------------------------------------------------


def test_current_is_the_bound_context_and_fails_outside() -> None:
    ctx = Context(running_job())

    token = ctx.bind()
    try:
        assert current() is ctx
    finally:
        Context.unbind(token)

    with pytest.raises(LookupError):
        current()


async def test_current_reaches_code_in_tasks_started_by_the_handler() -> None:
    ctx = Context(running_job())

    async def deep_inside() -> Context:
        await current().progress(0.25)
        return current()

    token = ctx.bind()
    try:
        seen = await asyncio.create_task(deep_inside())
    finally:
        Context.unbind(token)

    assert seen is ctx
    assert ctx.progress_value == 0.25


def test_request_stop_hands_out_the_callbacks_once_and_sets_cancelled() -> None:
    ctx = Context(running_job())
    calls: list[str] = []

    def close_stream() -> None:
        calls.append("close_stream")

    async def stop_upstream() -> None:
        calls.append("stop_upstream")

    ctx.on_cancel(close_stream)
    ctx.on_cancel(stop_upstream)
    assert not ctx.cancelled

    first = ctx.request_stop("cancel_requested")
    second = ctx.request_stop("timeout")

    assert first == [close_stream, stop_upstream]
    assert second == []
    assert ctx.cancelled
    assert ctx.cancel_reason == "cancel_requested"


def test_idempotency_keys_are_stable_across_attempts() -> None:
    first = running_job(attempt=1)
    retry = Context(running_job(id=first.id, attempt=2))
    ctx = Context(first)

    assert ctx.idempotency_key == retry.idempotency_key == first.id
    assert ctx.effect_key("send_email") == retry.effect_key("send_email")
    assert ctx.effect_key("send_email") != ctx.effect_key("charge_card")


def test_deadline_is_an_aware_datetime() -> None:
    ctx = Context(running_job(), deadline_ts=1_700_000_000.0)

    assert ctx.deadline == datetime.fromtimestamp(1_700_000_000.0, UTC)
    assert Context(running_job()).deadline is None


def test_log_lines_keep_their_place_among_coalesced_reports() -> None:
    ctx = Context(running_job())
    ctx.log("chunking")
    for i in range(1, 11):
        ctx.progress(i / 100, stage="chunking")
    ctx.output(delta="Hel")
    ctx.output(delta="lo")
    ctx.log("summarizing")
    ctx.progress(0.5, stage="summarizing")

    update = take(ctx)

    assert [(kind, data.get("message") or data.get("delta") or data.get("stage"))
            for kind, data in update.events] == [
        ("log", "chunking"),
        ("progress", "chunking"),
        ("output", "Hello"),
        ("log", "summarizing"),
        ("progress", "summarizing"),
    ]  # fmt: skip
    assert update.progress == 0.5
    assert update.stage == "summarizing"
