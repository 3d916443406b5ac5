"""OpenAI's background mode for any model: a Responses API request as a longjobs job.

A ``POST /v1/responses`` becomes a job of the built-in kind ``response`` whose input is the
request (``ResponseInput``). Its handler streams the model's answer from the upstream through
``longjobs.ai``: the text deltas are the job's ``output`` events, the tokens its usage, the
finished text its result. Everything the Responses API shows is derived from the job, so it is
as durable as the job:

- the Response object (``response_object``): status, output message, usage, error;
- the stream events (``ResponseEvents``): the job's event log mapped one way only, so the same
  log always gives the same events with the same ``sequence_number``s — which is what makes
  ``starting_after=N`` resume exactly after N, and a replay from 0 equal to the live stream.

A response id is its job's id with ``resp_`` for ``job_``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from longjobs import ai
from longjobs.backends.outbox import INCOMPLETE_FINISH_REASONS
from longjobs.backends.outbox import RESPONSE_KIND as RESPONSE_KIND  # the built-in kind
from longjobs.context import Context
from longjobs.models import JSON, Event, Job, Status

if TYPE_CHECKING:
    from longjobs.app import App

_JOB_PREFIX, _RESPONSE_PREFIX = "job_", "resp_"


# -- the request -------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["input_text", "output_text", "text"]
    text: str


class InputMessage(BaseModel):
    """One message of the conversation (the Responses API's easy input message)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class ResponseInput(BaseModel):
    """What a response job keeps of its create request (its input), validated."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    background: bool = False
    store: bool = True


# -- the job kind ------------------------------------------------------------------------------
class ResponseResult(BaseModel):
    """A finished response job's result: the whole text and how the upstream ended it."""

    text: str
    finish_reason: str | None = None


def install(app: App) -> None:
    """Register the ``response`` kind on ``app``; its upstream comes from ``app.settings``."""

    async def response(ctx: Context, request: ResponseInput) -> ResponseResult:
        """A Responses API request, answered by the upstream model (POST /v1/responses)."""
        options: dict[str, JSON] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        generation = await ai.complete(
            ctx,
            model=request.model,
            input=request.input
            if isinstance(request.input, str)
            else [m.model_dump() for m in request.input],
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            upstream=ai.Upstream.for_model(app.settings, request.model),
            **options,
        )
        return ResponseResult(text=generation.text, finish_reason=generation.finish_reason)

    app.job(name=RESPONSE_KIND, max_attempts=3)(response)


# -- ids ---------------------------------------------------------------------------------------
def response_id(job_id: str) -> str:
    return _RESPONSE_PREFIX + job_id.removeprefix(_JOB_PREFIX)


def job_id_of(response_id: str) -> str | None:
    """The job id behind a response id (None: not a response id)."""
    if not response_id.startswith(_RESPONSE_PREFIX) or len(response_id) > 128:
        return None
    return _JOB_PREFIX + response_id.removeprefix(_RESPONSE_PREFIX)


def message_id(job_id: str) -> str:
    return "msg_" + job_id.removeprefix(_JOB_PREFIX)


# -- the Response object -----------------------------------------------------------------------
_STATUS = {
    Status.PENDING: "queued",
    Status.RUNNING: "in_progress",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
}


def response_status(job: Job, result: ResponseResult | None) -> str:
    """One of ``queued | in_progress | completed | failed | cancelled | incomplete``."""
    if job.status is Status.COMPLETED and result is not None and _incomplete(result):
        return "incomplete"
    return _STATUS[job.status]


def _incomplete(result: ResponseResult) -> bool:
    return result.finish_reason in INCOMPLETE_FINISH_REASONS


def response_object(job: Job, text: str, result: ResponseResult | None = None) -> dict[str, JSON]:
    """The Response of ``job`` with ``text`` as its output so far (``result`` once completed)."""
    request = ResponseInput.model_validate(job.input)
    status = response_status(job, result)
    item_status = {"completed": "completed", "in_progress": "in_progress"}.get(status, "incomplete")
    output = [message_item(job.id, text, item_status)] if text or status == "completed" else []
    finished = job.finished_at.timestamp() if job.finished_at is not None else None
    return {
        "id": response_id(job.id),
        "object": "response",
        "created_at": int(job.created_at.timestamp()),
        "status": status,
        "background": request.background,
        "model": request.model,
        "instructions": request.instructions,
        "output": output,
        "error": _error_of(job),
        "incomplete_details": _incomplete_details(result) if status == "incomplete" else None,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "parallel_tool_calls": True,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "store": request.store,
        "usage": _usage(job),
        "completed_at": int(finished) if finished is not None and status == "completed" else None,
    }


def message_item(job_id: str, text: str, status: str) -> dict[str, JSON]:
    return {
        "id": message_id(job_id),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text_part(text)],
    }


def output_text_part(text: str) -> dict[str, JSON]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _error_of(job: Job) -> dict[str, JSON] | None:
    if job.status is not Status.FAILED or job.error is None:
        return None
    return {"code": "server_error", "message": f"{job.error.type}: {job.error.message}"}


def _incomplete_details(result: ResponseResult | None) -> dict[str, JSON]:
    reason = "content_filter" if result and result.finish_reason == "content_filter" else None
    return {"reason": reason or "max_output_tokens"}


def _usage(job: Job) -> dict[str, JSON]:
    usage = job.usage
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def result_of(raw: JSON) -> ResponseResult | None:
    """A stored result as ``ResponseResult`` (None when there is none)."""
    return None if raw is None else ResponseResult.model_validate(raw)


# -- the stream --------------------------------------------------------------------------------
class ResponseEvents:
    """Maps a response job's event log, in order, to Responses API stream events.

    ``feed`` takes the job's events one by one and returns the stream events each one makes,
    numbered from 0; a terminal event also needs the final Response object (``final``). The
    mapping has no other input, so a replay numbers every event as the live stream did."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.sequence = 0
        self.created = False
        self.started = False
        self.item_open = False
        self.text: list[str] = []

    def snapshot(self, status: str) -> dict[str, JSON]:
        """The Response as the lifecycle events carry it (no output yet)."""
        response = response_object(self.job, "")
        response.update(status=status, output=[], usage=None, completed_at=None)
        return response

    def feed(self, event: Event, final: Mapping[str, JSON] | None = None) -> list[dict[str, JSON]]:
        out: list[dict[str, JSON]] = []
        if event.type == "status":
            self._status(str(event.data.get("status")), final, out)
        elif event.type == "output":
            delta = event.data.get("delta")
            if isinstance(delta, str) and delta:
                self._delta(delta, out)
        return out

    def _emit(self, out: list[dict[str, JSON]], kind: str, **fields: JSON) -> None:
        out.append({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1

    def _status(
        self, status: str, final: Mapping[str, JSON] | None, out: list[dict[str, JSON]]
    ) -> None:
        if not self.created:
            self.created = True
            self._emit(out, "response.created", response=self.snapshot("queued"))
            self._emit(out, "response.queued", response=self.snapshot("queued"))
        if status == Status.RUNNING and not self.started:
            self.started = True
            self._emit(out, "response.in_progress", response=self.snapshot("in_progress"))
        elif status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            response = dict(final) if final is not None else self.snapshot(_STATUS[Status(status)])
            self._close_item(out, str(response["status"]))
            self._emit(out, f"response.{_FINAL_EVENT[str(response['status'])]}", response=response)

    def _delta(self, delta: str, out: list[dict[str, JSON]]) -> None:
        item = message_id(self.job.id)
        if not self.item_open:
            self.item_open = True
            added = message_item(self.job.id, "", "in_progress")
            added["content"] = []
            self._emit(out, "response.output_item.added", output_index=0, item=added)
            self._emit(
                out,
                "response.content_part.added",
                item_id=item,
                output_index=0,
                content_index=0,
                part=output_text_part(""),
            )
        self.text.append(delta)
        self._emit(
            out,
            "response.output_text.delta",
            item_id=item,
            output_index=0,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _close_item(self, out: list[dict[str, JSON]], status: str) -> None:
        if not self.item_open:
            return
        self.item_open = False
        item, text = message_id(self.job.id), "".join(self.text)
        place: dict[str, Any] = {"item_id": item, "output_index": 0, "content_index": 0}
        self._emit(out, "response.output_text.done", **place, text=text, logprobs=[])
        self._emit(out, "response.content_part.done", **place, part=output_text_part(text))
        item_status = "completed" if status == "completed" else "incomplete"
        done = message_item(self.job.id, text, item_status)
        self._emit(out, "response.output_item.done", output_index=0, item=done)


_FINAL_EVENT = {
    "completed": "completed",
    "incomplete": "incomplete",
    "failed": "failed",
    "cancelled": "cancelled",
}
"""The last event of a stream per final status. OpenAI has no stream event for a cancelled
response (its webhook is ``response.cancelled``); longjobs ends such a stream with one."""
