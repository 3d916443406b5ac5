"""One streamed call of an upstream model, read as raw Server-Sent Events: Chat Completions
(``ChatCall``) or a background Responses API response (``ResponsesCall``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from longjobs.context import Context
from longjobs.errors import PermanentError, RetryableError
from longjobs.models import JSON

if TYPE_CHECKING:
    from openai import AsyncOpenAI


@dataclass(frozen=True, slots=True)
class Generation:
    """What a call produced: the whole text (earlier attempts' included), how it ended, and the
    tokens this attempt added to the job's usage."""

    text: str
    finish_reason: str | None
    """The upstream's: ``stop``, ``length`` (hit the token limit), ``content_filter``..."""
    input_tokens: int
    output_tokens: int


class _Call:
    """One streamed upstream call, and what it produced so far.

    The request goes through the SDK (its base URL, key, retries with ``retry-after`` and typed
    errors), but the stream is read as raw Server-Sent Events and each event parsed as plain
    JSON: building the SDK's typed object for every token cost ~200 µs, so one worker core
    followed only ~5,000 tokens a second."""

    def __init__(self, ctx: Context, prior: str) -> None:
        self.ctx = ctx
        self.parts = [prior]
        self.deltas = 0
        self.finish_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.counted = False  # the upstream sent its own token count

    def text(self) -> str:
        return "".join(self.parts)

    def generation(self) -> Generation:
        return Generation(
            text=self.text(),
            finish_reason=self.finish_reason,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )

    def _delta(self, delta: str) -> None:
        self.ctx.output(delta=delta)
        self.parts.append(delta)
        self.deltas += 1

    def _record_usage(self) -> None:
        if not self.counted:  # cut short: every delta received counts as a token generated
            self.output_tokens = self.deltas
        self.ctx.usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of an SSE body's ``data`` fields, one per event, until ``[DONE]`` or its
    end. An event carrying an ``error`` (a failure reported mid-stream) and a transport error
    while reading both raise a RetryableError. Works on the body's bytes as they come (lines
    end with LF, CRLF or CR): a layer of text decoding and line splitting per token less."""
    pending = b""
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except Exception as exc:  # the HTTP library's: the connection broke mid-stream
            message = f"the upstream stream broke: {type(exc).__name__}: {exc}"
            raise RetryableError(message, type="upstream_unavailable") from exc
        pending += chunk
        if len(pending) > _MAX_EVENT_BYTES:
            message = f"the upstream sent an event over {_MAX_EVENT_BYTES} bytes"
            raise RetryableError(message, type="upstream_error")
        if b"\r" in pending and not pending.endswith(b"\r"):  # a lone CR may precede an LF
            pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, pending = pending.split(b"\n\n")
        for block in blocks:
            payload = b"\n".join(
                line[6:] if line.startswith(b"data: ") else line[5:]
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            )
            if payload == b"[DONE]":
                return
            if payload and (event := _event_of(payload)) is not None:
                yield event


_MAX_EVENT_BYTES = 16 * 1024 * 1024


def _event_of(payload: bytes) -> dict[str, Any] | None:
    """One event's data as an object (None for anything else); an ``error`` raises."""
    event = json.loads(payload)
    if not isinstance(event, dict):
        return None
    error = event.get("error") or (event if event.get("type") == "error" else None)
    if error:
        detail = error.get("message") if isinstance(error, dict) else error
        message = f"the upstream reported an error mid-stream: {detail}"[:1000]
        raise RetryableError(message, type="upstream_error")
    return event


class ChatCall(_Call):
    """A Chat Completions stream: what every OpenAI-compatible server speaks."""

    async def run(self, client: AsyncOpenAI, request: dict[str, Any]) -> None:
        import openai

        try:
            # Leaving the block closes the response, also when the task is cancelled (a cancel
            # or a deadline): the connection drops and the upstream stops generating.
            async with client.chat.completions.with_streaming_response.create(
                **request
            ) as response:
                async for chunk in sse_events(response.http_response.aiter_bytes()):
                    self._take(chunk)
        except openai.APIError as exc:
            raise _handler_error(exc) from exc
        finally:
            self._record_usage()

    def _take(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.counted = True
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        for choice in (chunk.get("choices") or [])[:1]:
            delta = (choice.get("delta") or {}).get("content")
            if delta and isinstance(delta, str):
                self._delta(delta)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])


_CHECKPOINT_KEY = "longjobs.ai"
"""Where a ``responses`` call keeps its upstream response in the job's checkpoint (a dict; a
handler's own checkpoint keys are kept)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """An upstream response an earlier attempt followed: where it got to, and the tokens the
    job's usage already counts for it."""

    response: str
    after: int
    recorded: tuple[int, int]


def attachment(state: JSON) -> Attachment | None:
    """The upstream response an earlier attempt checkpointed, if any."""
    saved = state.get(_CHECKPOINT_KEY) if isinstance(state, dict) else None
    if not isinstance(saved, dict) or not isinstance(saved.get("response"), str):
        return None
    after, recorded = saved.get("after"), saved.get("recorded")
    counts = (0, 0)
    if (
        isinstance(recorded, list)
        and len(recorded) == 2
        and all(isinstance(n, int) for n in recorded)
    ):
        counts = (recorded[0], recorded[1])
    return Attachment(saved["response"], after if isinstance(after, int) else -1, counts)


_FINISH = {"completed": "stop", "max_output_tokens": "length", "content_filter": "content_filter"}
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesCall(_Call):
    """One call of the upstream's Responses API in background mode, followed as a stream.

    Every event's number is checkpointed with the upstream response id; the checkpoint is
    written with the deltas of the same flush, so the stored text always ends where the
    checkpoint says, and a retried attempt re-attaches right after it (``starting_after``).
    The checkpoint also keeps the tokens the job's usage already counts for that response, so
    the upstream's final count (which covers every attempt) is added only once."""

    def __init__(self, ctx: Context, prior: str, attach: Attachment | None) -> None:
        super().__init__(ctx, prior)
        self.attach = attach
        self.upstream_id = attach.response if attach is not None else None
        self.after = attach.after if attach is not None else -1
        self.recorded = attach.recorded if attach is not None else (0, 0)
        self.outcome: str | None = None
        self.error: str | None = None

    async def run(self, client: AsyncOpenAI, request: dict[str, Any]) -> None:
        import openai

        streaming = client.responses.with_streaming_response
        if self.upstream_id is not None:
            opening = streaming.retrieve(self.upstream_id, stream=True, starting_after=self.after)
        else:
            opening = streaming.create(**request, background=True, stream=True)
        try:
            async with opening as response:
                async for event in sse_events(response.http_response.aiter_bytes()):
                    self._take_event(event)
        except asyncio.CancelledError:
            # Closing the stream does not stop a background response: cancel it when no later
            # attempt will re-attach (a cancel, or the last attempt's deadline); an attempt
            # interrupted otherwise (lease lost, shutdown, a deadline with retries left) leaves
            # it running for the next attempt.
            job, reason = self.ctx.job, self.ctx.cancel_reason
            last = job.attempt >= job.max_attempts
            if reason == "cancel" or (reason == "timeout" and last):
                await self._cancel_upstream(client)
            raise
        except openai.APIError as exc:
            raise _handler_error(exc) from exc
        finally:
            self._record_usage()
        self._check_outcome()

    def _take_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.output_text.delta":
            delta = event.get("delta")
            if delta and isinstance(delta, str):
                self._delta(delta)
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.upstream_id = response["id"]
            if kind in _FINAL:
                self._finished(str(kind).removeprefix("response."), response)
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            self.after = sequence
            self._save(self.recorded)

    def _save(self, recorded: tuple[int, int]) -> None:
        if self.upstream_id is None:
            return
        state = self.ctx.checkpoint_state
        saved = dict(state) if isinstance(state, dict) else {}
        saved[_CHECKPOINT_KEY] = {
            "response": self.upstream_id,
            "after": self.after,
            "recorded": list(recorded),
        }
        self.ctx.checkpoint(saved)

    def _record_usage(self) -> None:
        """Add what the job's usage does not count yet for this upstream response."""
        before_in, before_out = self.recorded
        if self.counted:  # the upstream's totals, every attempt's tokens included
            total_in, total_out = self.input_tokens, self.output_tokens
        else:  # cut short: each delta received counts as a token
            total_in, total_out = before_in, before_out + self.deltas
        self.input_tokens = max(0, total_in - before_in)
        self.output_tokens = max(0, total_out - before_out)
        self.ctx.usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        self._save((max(total_in, before_in), max(total_out, before_out)))

    def _finished(self, outcome: str, response: dict[str, Any]) -> None:
        self.outcome = outcome
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.counted = True
            self.input_tokens = int(usage.get("input_tokens") or 0)
            self.output_tokens = int(usage.get("output_tokens") or 0)
        details = response.get("incomplete_details") or {}
        reason = details.get("reason") if outcome == "incomplete" else outcome
        self.finish_reason = _FINISH.get(str(reason), str(reason))
        error = response.get("error")
        if isinstance(error, dict):
            self.error = str(error.get("message"))

    def _check_outcome(self) -> None:
        if self.outcome is None:  # the stream ended early: the next attempt re-attaches
            message = f"the upstream stream of {self.upstream_id} ended before the response"
            raise RetryableError(message, type="upstream_unavailable")
        if self.outcome == "failed":
            message = f"the upstream response failed: {self.error or 'no reason given'}"
            raise PermanentError(message, type="upstream_error")

    async def _cancel_upstream(self, client: AsyncOpenAI) -> None:
        if self.upstream_id is None:
            return
        with contextlib.suppress(Exception):  # best effort: the job is cancelled either way
            async with asyncio.timeout(5.0):
                await client.responses.cancel(self.upstream_id)


def _handler_error(exc: Exception) -> Exception:
    """What an SDK error means for the job: retry later, or fail now."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"the upstream answered {status}: {_message_of(exc)}"
        if status in (408, 409, 429) or status >= 500:
            retry_after = _retry_after(exc.response.headers.get("retry-after"))
            return RetryableError(message, type="upstream_unavailable", retry_after=retry_after)
        return PermanentError(message, type="upstream_error")
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return RetryableError(
            f"the upstream could not be reached: {exc}", type="upstream_unavailable"
        )
    return RetryableError(f"the upstream stream failed: {_message_of(exc)}", type="upstream_error")


def _message_of(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
    return str(exc)[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
