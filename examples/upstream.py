"""The example's optional model call: any OpenAI-compatible chat model, streamed into the job.

Used only when ``OPENAI_API_KEY``, ``LONGJOBS_UPSTREAM_BASE_URL`` or ``OPENAI_BASE_URL`` is set;
the model is ``LONGJOBS_EXAMPLE_MODEL`` (default ``gpt-4o-mini``). A local server such as vLLM or
Ollama needs only the base URL. The call goes through ``longjobs.ai``: tokens go to
``ctx.output`` as they arrive, token counts to ``ctx.usage``, and the upstream stream is closed
as soon as the job is cancelled, so generation (and billing) stops with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longjobs import Context, ai

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the model lives and which one to ask."""

    base_url: str | None
    api_key: str
    model: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Upstream | None:
        """The configured upstream, or None to stay offline."""
        api_key = environ.get("OPENAI_API_KEY", "")
        base_url = environ.get("LONGJOBS_UPSTREAM_BASE_URL") or environ.get("OPENAI_BASE_URL")
        if not api_key and not base_url:
            return None
        return cls(
            base_url=base_url or None,
            api_key=api_key or "not-needed",  # local servers accept any key, the SDK wants one
            model=environ.get("LONGJOBS_EXAMPLE_MODEL") or DEFAULT_MODEL,
        )


def summary_prompt(
    title: str | None, keywords: Sequence[str], candidates: Sequence[str], sentences: int
) -> list[ChatCompletionMessageParam]:
    """Messages asking for a ``sentences``-sentence summary built from pre-selected sentences.

    The handler sends the best extractive candidates rather than the whole document, so the
    prompt stays small whatever the size of the input.
    """
    excerpt = "\n".join(f"- {sentence}" for sentence in candidates)
    return [
        {
            "role": "system",
            "content": "You summarize documents faithfully. Answer with plain sentences only.",
        },
        {
            "role": "user",
            "content": (
                f"Title: {title or 'untitled'}\n"
                f"Keywords: {', '.join(keywords)}\n"
                f"Key sentences:\n{excerpt}\n\n"
                f"Write a summary of the document in at most {sentences} sentences."
            ),
        },
    ]


async def stream_chat(
    ctx: Context, upstream: Upstream, messages: list[ChatCompletionMessageParam]
) -> str:
    """Stream one chat completion into ``ctx.output``; return the whole text.

    ``longjobs.ai`` does the work: tokens to ``ctx.output``, counts to ``ctx.usage``, the
    upstream closed on cancel, a retried attempt continuing the stored text. It raises
    RetryableError for rate limits, timeouts, server errors and lost connections, and
    PermanentError for other refusals (a bad key, an unknown model).
    """
    where = ai.Upstream(base_url=upstream.base_url, api_key=upstream.api_key)
    return await ai.generate(ctx, model=upstream.model, input=messages, upstream=where)
