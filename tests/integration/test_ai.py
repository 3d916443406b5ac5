"""``longjobs.ai`` in users' handlers: streaming into the job, usage, continuing a retried
attempt, upstream errors, and the upstream stream closed on cancel and on deadline — against the
local test-double upstream, through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from longjobs import Context, Job, PermanentError, RetryableError, Status, ai
from longjobs.errors import ConfigurationError
from longjobs.follow import stored_text
from longjobs.models import Usage
from longjobs.settings import Settings
from tests.fake_upstream import (
    BackgroundRecord,
    FakeUpstream,
    StreamRecord,
    answer,
    running_upstream,
)
from tests.integration.worker_harness import (
    events_of,
    make_app,
    running_worker,
    sqlite_url,
    until,
    wait_until_terminal,
)


@pytest.fixture(scope="module")
def double() -> Iterator[FakeUpstream]:
    with running_upstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
async def closed_clients() -> AsyncIterator[None]:
    """Each test runs on its own event loop: close the SDK clients it opened on it."""
    yield
    await ai.aclose()


@pytest.fixture
def upstream(double: FakeUpstream) -> ai.Upstream:
    double.tokens, double.rate, double.fail_with, double.retry_after = 12, 200.0, [], 0.05
    return ai.Upstream(base_url=double.base_url, api_key="test", max_retries=2)


def context(
    attempt: int = 1,
    stored: str = "",
    output_tokens: int = 0,
    checkpoint: Any = None,
    max_attempts: int = 3,
) -> Context:
    """A handler's context; ``stored`` is the text earlier attempts left in the store."""
    job = Job(
        id="job_ai",
        tenant="default",
        kind="writer",
        status=Status.RUNNING,
        attempt=attempt,
        max_attempts=max_attempts,
        created_at=datetime.now(UTC),
        usage=Usage(output_tokens=output_tokens),
        checkpoint=checkpoint,
    )

    async def reader() -> str:
        return stored

    return Context(job, reader=reader)


def reported(ctx: Context) -> tuple[str, int, int]:
    """The text deltas and usage the context would write."""
    update = ctx.take_update()
    assert update is not None
    text = "".join(str(data["delta"]) for kind, data in update.events if kind == "output")
    return text, ctx.input_tokens, ctx.output_tokens


async def test_generate_streams_into_the_job_and_counts_tokens(
    double: FakeUpstream, upstream: ai.Upstream
) -> None:
    ctx = context()

    text = await ai.generate(
        ctx, model="m", input="write", instructions="be short", upstream=upstream, seed=7
    )

    assert text == "".join(answer(12))
    assert reported(ctx) == (text, 10, 12)
    request = double.requests[-1]
    assert request["messages"] == [
        {"role": "system", "content": "be short"},
        {"role": "user", "content": "write"},
    ]
    assert request["seed"] == 7
    assert request["stream"] is True


async def test_a_retried_attempt_continues_the_stored_text(
    double: FakeUpstream, upstream: ai.Upstream
) -> None:
    before = "".join(answer(5))
    ctx = context(attempt=2, stored=before, output_tokens=5)

    generation = await ai.complete(
        ctx, model="m", input="continue me", max_output_tokens=8, upstream=upstream
    )

    assert generation.text == "".join(answer(8))  # 5 stored + 3 more: the limit holds overall
    assert generation.finish_reason == "length"
    new_text, _, output_tokens = reported(ctx)
    assert new_text == "".join(answer(8)[5:])  # only what clients have not seen yet
    assert output_tokens == 5 + 3
    assert double.requests[-1]["messages"][-1] == {"role": "assistant", "content": before}
    assert double.streams_for("continue me")[-1].first_token == 5


async def stopped_midway(
    ctx: Context,
    prompt: str,
    upstream: ai.Upstream,
    sent: Callable[[], Sequence[StreamRecord | BackgroundRecord]],
    reason: str,
) -> float:
    """Run ``generate`` until the double has sent a few tokens, then stop it as the worker
    does (the reason, then the task's cancellation); the monotonic time of the stop."""
    task = asyncio.create_task(ai.generate(ctx, model="m", input=prompt, upstream=upstream))
    await until(lambda: any(len(record.sent_at) >= 3 for record in sent()))
    stopped = time.monotonic()
    ctx.request_stop(reason)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return stopped


async def test_cancelling_the_handler_closes_the_upstream_and_keeps_the_text(
    double: FakeUpstream, upstream: ai.Upstream
) -> None:
    double.tokens, double.rate = 500, 50.0
    ctx = context()

    stopped = await stopped_midway(
        ctx, "stop me", upstream, lambda: double.streams_for("stop me"), "cancel"
    )

    [record] = double.streams_for("stop me")
    await until(lambda: record.closed_by_client, timeout=5)
    assert record.closed_by_client_at is not None
    assert record.closed_by_client_at - stopped < 1.0
    assert not record.finished
    assert ctx.output_tokens >= 1  # each delta received counts, the upstream sent no usage


async def test_upstream_429_is_retried_then_a_refusal_is_permanent(
    double: FakeUpstream, upstream: ai.Upstream
) -> None:
    double.fail_with = [429]
    assert await ai.generate(context(), model="m", input="x", upstream=upstream)

    double.fail_with = [401]
    with pytest.raises(PermanentError, match="answered 401") as refused:
        await ai.generate(context(), model="m", input="x", upstream=upstream)
    assert refused.value.type == "upstream_error"

    double.fail_with = [503, 503, 503]
    with pytest.raises(RetryableError) as unavailable:
        await ai.generate(context(), model="m", input="x", upstream=upstream)
    assert unavailable.value.type == "upstream_unavailable"
    assert unavailable.value.retry_after == pytest.approx(0.05)


async def test_an_unreachable_or_missing_upstream_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = ai.Upstream(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    with pytest.raises(RetryableError, match="could not be reached"):
        await ai.generate(context(), model="m", input="x", upstream=dead)

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="LONGJOBS_UPSTREAM_BASE_URL"):
        ai.Upstream().client()
    with pytest.raises(PermanentError) as caught:
        await ai.generate(context(), model="m", input="x", upstream=ai.Upstream())
    assert caught.value.type == "upstream_not_configured"


def test_models_are_routed_by_pattern_and_keys_stay_with_their_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_KEY", "vllm-secret")
    routes = {
        "llama*": {"base_url": "http://vllm:8000/v1", "api_key_env": "VLLM_KEY"},
        "qwen*": {"base_url": "http://ollama:11434/v1"},
        "o3-deep-*": {"api": "responses"},
    }
    settings = Settings(upstream_api_key="default-secret", upstream_routes=routes)

    llama = ai.Upstream.for_model(settings, "llama-3.1-70b")
    qwen = ai.Upstream.for_model(settings, "qwen2.5:7b")
    deep = ai.Upstream.for_model(settings, "o3-deep-research")
    other = ai.Upstream.for_model(settings, "gpt-4o")

    assert (llama.base_url, llama.api_key) == ("http://vllm:8000/v1", "vllm-secret")
    assert (qwen.base_url, qwen.api_key) == ("http://ollama:11434/v1", None)  # not the default key
    assert (deep.base_url, deep.api_key, deep.api) == (None, "default-secret", "responses")
    assert (other.base_url, other.api_key, other.api) == (None, "default-secret", "auto")
    assert not llama.uses_responses
    assert deep.uses_responses
    assert other.uses_responses  # OpenAI's own API
    assert "secret" not in repr(llama) + repr(settings)


def test_responses_input_becomes_chat_messages() -> None:
    items: list[dict[str, Any]] = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
    ]
    assert ai.to_messages(items, "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    with pytest.raises(ValueError, match="role"):
        ai.to_messages([{"role": "tool", "content": "x"}], None)
    with pytest.raises(ValueError, match="content"):
        ai.to_messages([{"role": "user", "content": [{"type": "input_image"}]}], None)


# -- the Responses API upstream, in background mode -------------------------------------------
@pytest.fixture
def background(upstream: ai.Upstream) -> ai.Upstream:
    return dataclasses.replace(upstream, api="responses")


async def test_responses_mode_follows_a_background_response(
    double: FakeUpstream, background: ai.Upstream
) -> None:
    ctx = context()

    generation = await ai.complete(ctx, model="m", input="in the background", upstream=background)

    assert generation.text == "".join(answer(12))
    assert generation.finish_reason == "stop"
    assert reported(ctx) == (generation.text, 10, 12)
    [record] = double.responses_for("in the background")
    saved = {"response": record.id, "after": 19, "recorded": [10, 12]}
    assert ctx.checkpoint_state == {"longjobs.ai": saved}
    assert double.requests[-1]["background"] is True
    assert double.requests[-1]["stream"] is True


async def test_responses_mode_reattaches_after_an_interrupted_attempt(
    double: FakeUpstream, background: ai.Upstream
) -> None:
    double.tokens, double.rate = 30, 100.0
    first = context()
    # The worker shuts down: the next attempt must go on with the same upstream response.
    await stopped_midway(
        first, "reattach", background, lambda: double.responses_for("reattach"), "shutdown"
    )
    stored, _, spent = reported(first)
    saved = first.checkpoint_state

    second = context(attempt=2, stored=stored, output_tokens=spent, checkpoint=saved)
    text = await ai.generate(second, model="m", input="reattach", upstream=background)

    full = "".join(answer(30))
    assert text == full
    new_text, _, output_tokens = reported(second)
    assert stored + new_text == full  # nothing twice, nothing missing
    assert output_tokens == 30  # the upstream's total, not added to what was counted before
    [record] = double.responses_for("reattach")  # one generation paid for, followed twice
    assert record.attaches == 2
    assert record.finished
    assert record.cancelled_at is None


@pytest.mark.parametrize(
    ("reason", "attempt", "cancelled"),
    [("timeout", 1, False), ("timeout", 3, True), ("shutdown", 3, False), ("cancel", 1, True)],
)
async def test_responses_mode_leaves_the_upstream_to_a_next_attempt(
    double: FakeUpstream,
    background: ai.Upstream,
    reason: str,
    attempt: int,
    cancelled: bool,
) -> None:
    """Stopped for a reason another attempt follows (a deadline with attempts left, a
    shutdown), the upstream response goes on for it to re-attach; otherwise it is cancelled."""
    double.tokens, double.rate = 500, 100.0
    prompt = f"stop for {reason} in attempt {attempt}"
    ctx = context(attempt=attempt, max_attempts=3)

    await stopped_midway(ctx, prompt, background, lambda: double.responses_for(prompt), reason)
    await asyncio.sleep(0.1)

    [record] = double.responses_for(prompt)
    assert (record.cancelled_at is not None) is cancelled
    assert ctx.checkpoint_state["longjobs.ai"]["response"] == record.id


async def test_chat_continuation_flavours_and_opting_out(
    double: FakeUpstream, upstream: ai.Upstream
) -> None:
    before = "".join(answer(4))
    vllm = dataclasses.replace(upstream, continuation="vllm")
    await ai.generate(context(attempt=2, stored=before), model="m", input="v", upstream=vllm)
    assert double.requests[-1]["continue_final_message"] is True
    assert double.requests[-1]["add_generation_prompt"] is False

    fresh = context(attempt=2, stored=before)
    text = await ai.generate(fresh, model="m", input="o", upstream=upstream, continue_output=False)
    assert text == "".join(answer(12))
    assert double.requests[-1]["messages"] == [{"role": "user", "content": "o"}]
    assert ai.Upstream().uses_responses  # OpenAI's own API: background mode
    assert ai.Upstream(base_url="https://api.openai.com/v1").uses_responses
    assert not upstream.uses_responses  # any other server: Chat Completions


async def test_responses_mode_cancel_cancels_the_upstream_response(
    double: FakeUpstream, background: ai.Upstream
) -> None:
    double.tokens, double.rate = 500, 50.0
    ctx = context()

    stopped = await stopped_midway(
        ctx, "bg cancel", background, lambda: double.responses_for("bg cancel"), "cancel"
    )

    [record] = double.responses_for("bg cancel")
    assert record.cancelled_at is not None
    assert record.cancelled_at - stopped < 1.0
    assert not record.finished


# -- in a real worker -----------------------------------------------------------------------------
async def test_a_deadline_stops_the_generation_and_keeps_its_text(
    double: FakeUpstream, upstream: ai.Upstream, tmp_path: Path
) -> None:
    double.tokens, double.rate = 500, 40.0
    app = make_app(sqlite_url(tmp_path))

    @app.job(timeout=2.0, max_attempts=1)  # the first call of a process imports the SDK
    async def long_story(ctx: Context) -> str:
        return await ai.generate(ctx, model="m", input="a long story", upstream=upstream)

    async with app, running_worker(app):
        job = await app.submit("long_story")
        final = await wait_until_terminal(app, job.id)
        backend = await app.open()
        kept = await stored_text(backend, "default", job.id)
        usage_events = [e for e in await events_of(app, job.id) if e.type == "usage"]

    assert final.status is Status.FAILED
    assert final.error is not None
    assert final.error.type == "timeout"
    [record] = double.streams_for("a long story")
    await until(lambda: record.closed_by_client, timeout=5)  # seen at its next token
    assert kept
    assert "".join(answer(500)).startswith(kept)
    assert final.usage.output_tokens >= kept.count("tok")
    assert usage_events
