"""Calling models from handlers: stream a completion into the job, count its tokens, stop it.

``generate`` sends a conversation to an OpenAI-compatible endpoint (OpenAI itself, vLLM,
Ollama, llama.cpp's server, LiteLLM...) through the official ``openai`` SDK, with streaming, and:

- publishes every text delta with ``ctx.output(delta=...)``, so clients watch the text grow;
- records the tokens spent with ``ctx.usage(...)`` (the upstream's count, or the deltas received
  when the stream was cut before the upstream could count);
- closes the upstream stream as soon as the job is cancelled or overruns its deadline, so
  generation (and billing) stops; the text produced so far stays in the job's output;
- on a retried attempt, continues the text the earlier attempts stored instead of starting over:
  the stored text goes to the upstream as the start of the assistant's answer (a prefill, which
  vLLM, llama.cpp, Ollama and most self-hosted servers continue), so a client never sees a delta
  twice or a gap;
- retries 408/409/429/5xx answers and lost connections (the SDK's retries, honouring
  ``retry-after``), then hands the job to the retry policy as a ``RetryableError``; other 4xx
  answers fail the job with an ``upstream_error``.

>>> from longjobs import App, Context, ai
>>> app = App()
>>> @app.job(timeout=900)
... async def summarize(ctx: Context, text: str) -> str:
...     return await ai.generate(ctx, model="qwen2.5:7b", input=f"Summarize:\\n{text}")

The upstream comes from ``LONGJOBS_UPSTREAM_BASE_URL`` and ``LONGJOBS_UPSTREAM_API_KEY`` (or pass
``upstream=Upstream(...)``). Needs the ``openai`` extra: ``pip install 'longjobs[openai]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from longjobs.ai.calls import ChatCall, Generation, ResponsesCall, attachment, sse_events
from longjobs.ai.upstream import Upstream, aclose
from longjobs.context import Context
from longjobs.errors import ConfigurationError, PermanentError
from longjobs.models import JSON
from longjobs.settings import Settings

__all__ = [
    "Generation",
    "Upstream",
    "aclose",
    "complete",
    "generate",
    "sse_events",
    "to_messages",
]

Message = dict[str, Any]


def to_messages(
    input: str | Sequence[Mapping[str, JSON]], instructions: str | None
) -> list[Message]:
    """A Responses-style ``input`` (a string, or message items whose content is a string or a
    list of text parts) and ``instructions`` as Chat Completions messages."""
    messages: list[Message] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
        return messages
    for item in input:
        role = item.get("role")
        if item.get("type", "message") != "message" or role not in _ROLES:
            raise ValueError("input items must be messages with role user, assistant or system")
        messages.append({"role": _ROLES[role], "content": _text_of(item.get("content"))})
    return messages


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _text_of(content: JSON) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        strings = [text for text in texts if isinstance(text, str)]
        if len(strings) == len(content):
            return "".join(strings)
    raise ValueError("message content must be a string or a list of text parts")


async def generate(
    ctx: Context,
    *,
    model: str,
    input: str | Sequence[Mapping[str, JSON]],
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    upstream: Upstream | None = None,
    continue_output: bool = True,
    **params: JSON,
) -> str:
    """Stream ``model``'s answer to ``input`` into the job's output and return its whole text.

    ``params`` go to the upstream as they are (``temperature``, ``top_p``, ``seed``...)."""
    generation = await complete(
        ctx,
        model=model,
        input=input,
        instructions=instructions,
        max_output_tokens=max_output_tokens,
        upstream=upstream,
        continue_output=continue_output,
        **params,
    )
    return generation.text


async def complete(
    ctx: Context,
    *,
    model: str,
    input: str | Sequence[Mapping[str, JSON]],
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    upstream: Upstream | None = None,
    continue_output: bool = True,
    **params: JSON,
) -> Generation:
    """Like ``generate``, with how the generation ended and the tokens it spent.

    ``continue_output``: a retried attempt continues the text the job has stored (what its
    stream clients saw) rather than starting over, which is right when this call writes all of
    the job's output. A handler that writes other output too, or calls a model more than once,
    passes False (and keeps its own progress with ``ctx.checkpoint``)."""
    try:
        messages = to_messages(input, instructions)
    except ValueError as exc:
        raise PermanentError(str(exc), type="invalid_input") from None
    upstream = upstream or Upstream.for_model(Settings(), model)
    prior = await ctx.stored_output() if ctx.attempt > 1 and continue_output else ""
    try:
        client = upstream.client()
    except ConfigurationError as exc:  # no retry can help: fail the job with the reason
        raise PermanentError(str(exc), type="upstream_not_configured") from None
    responses = upstream.uses_responses
    attach = attachment(ctx.checkpoint_state) if responses and continue_output else None
    if responses and (attach is not None or not prior):
        responses_call = ResponsesCall(ctx, prior, attach)
        responses_request: dict[str, Any] = {"model": model, "input": messages}
        if params:  # as they are, also those the SDK has no argument for (top_k, min_p...)
            responses_request["extra_body"] = params
        if max_output_tokens is not None:
            responses_request["max_output_tokens"] = max_output_tokens
        await responses_call.run(client, responses_request)
        return responses_call.generation()
    extra: dict[str, Any] = dict(params)  # as they are, also those the SDK has no argument for
    if prior and upstream.continuation == "vllm":
        extra.update(continue_final_message=True, add_generation_prompt=False)
    request: dict[str, Any] = {
        "model": model,
        "messages": [*messages, {"role": "assistant", "content": prior}] if prior else messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if extra:
        request["extra_body"] = extra
    if max_output_tokens is not None:
        spent = ctx.job.usage.output_tokens if prior else 0
        request["max_tokens"] = max(1, max_output_tokens - spent)
    call = ChatCall(ctx, prior)
    await call.run(client, request)
    return call.generation()
