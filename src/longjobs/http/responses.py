"""``/v1/responses``: OpenAI's Responses API in background mode, over longjobs jobs.

The official ``openai`` SDKs work unchanged against it (``OpenAI(base_url=".../v1")``): create
(background or inline, streamed or not), retrieve (poll, or stream with ``starting_after``),
cancel, delete. Every error on these routes has OpenAI's body shape, ``{"error": {"message",
"type", "param", "code"}}``, so the SDKs raise their typed exceptions. See ``longjobs.responses``
for how a response maps to a job.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import pydantic_core
from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from longjobs.app import App
from longjobs.errors import IdempotencyConflict, JobNotFound, StorageError, StorageUnavailable
from longjobs.follow import OutputTexts, follow_events
from longjobs.http.dependencies import StateDep, TenantDep
from longjobs.http.events import MAX_SEQUENCE, stream_response
from longjobs.http.jobs import admit, wire_json
from longjobs.http.openapi import RESPONSE_LINKS
from longjobs.http.problems import PROBLEM_HEADERS, PROBLEMS, ProblemError
from longjobs.http.state import APIState
from longjobs.http.submission import parse_json, read_body
from longjobs.models import JSON, Job, Status
from longjobs.responses import (
    RESPONSE_KIND,
    ResponseEvents,
    ResponseInput,
    job_id_of,
    response_id,
    response_object,
    result_of,
)

logger = logging.getLogger("longjobs.http")
T = TypeVar("T")

_INLINE_WAIT_SECONDS = 5.0
"""An inline (not background) request waits for its job in steps of this long, and stops
waiting (the job goes on, retrievable) once its client has gone."""

_CANCEL_WAIT_SECONDS = 10.0
"""A cancel answers once the job is cancelled, or after this long with the job as it is."""

_IGNORED = frozenset(
    {
        "include", "parallel_tool_calls", "prompt_cache_key", "safety_identifier",
        "service_tier", "stream_options", "truncation", "user", "text", "tool_choice", "tools",
        "reasoning",
    }
)  # fmt: skip
"""Create parameters accepted and not acted on (the defaults, or hints for OpenAI's own
serving); ``tools`` only when empty, ``text`` only as plain text."""


# -- errors in OpenAI's shape ----------------------------------------------------------------------
class OpenAIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def _not_found(response_id: str) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.", code="not_found")


def _translated(exc: Exception) -> OpenAIError:
    """Any error of a route or its dependencies, in OpenAI's shape."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ProblemError):
        status = PROBLEMS[exc.slug][0]
        errors = exc.extra.get("errors") or [{}]
        param = ".".join(str(part) for part in errors[0].get("loc", [])[1:]) or None
        headers = dict(exc.headers)
        if (retry_after := exc.extra.get("retry_after")) is not None:
            headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))
        return OpenAIError(status, exc.detail, param=param, code=exc.slug, headers=headers)
    if isinstance(exc, RequestValidationError):
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"][1:]) or None
        return OpenAIError(400, f"invalid {param}: {error['msg']}", param=param)
    if isinstance(exc, StorageUnavailable):
        retry = str(max(1, round(exc.retry_after)))
        message = "the job store is unavailable; try again later"
        return OpenAIError(503, message, code="storage_unavailable", headers={"Retry-After": retry})
    if isinstance(exc, JobNotFound):  # deleted while the request waited for it
        return _not_found(response_id(exc.job_id))
    if isinstance(exc, IdempotencyConflict):
        message = "this Idempotency-Key was already used with a different request body"
        return OpenAIError(409, message, code="idempotency_conflict")
    logger.exception("a /v1/responses request failed")
    return OpenAIError(500, "the server could not complete the request")


class _OpenAIErrorRoute(APIRoute):
    """A route whose every error, its dependencies' (authentication, rate limits) included, is
    answered in OpenAI's shape rather than as an RFC 9457 problem."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return _translated(exc).response()

        return handle


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """Every error of ``/v1/responses``: OpenAI's shape, so its SDKs raise their own types."""

    error: OpenAIErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for errors in OpenAI's shape, with the headers that come along."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": OpenAIErrorBody, "description": "An error"}
        if status in PROBLEM_HEADERS:
            responses[status]["headers"] = PROBLEM_HEADERS[status]
    return responses


_RESPONSE_CONTENT: dict[str, dict[str, Any]] = {"application/json": {}, "text/event-stream": {}}
"""What a 200 of ``/v1/responses`` holds: the Response, or (``stream``) its events."""

router = APIRouter(
    route_class=_OpenAIErrorRoute, tags=["responses"], responses=_errors(400, 401, 429, 503)
)


# -- create ----------------------------------------------------------------------------------------
def _request_of(body: JSON) -> tuple[ResponseInput, bool]:
    """The validated job input and whether to stream; 400 naming the parameter at fault."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    fields = dict(body)
    stream = fields.pop("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "stream must be a boolean", param="stream")
    for name in _IGNORED & fields.keys():
        value = fields.pop(name)
        if (name == "tools" and value) or (name == "text" and not _plain_text(value)):
            raise OpenAIError(400, f"{name} is not supported here", param=name)
    try:
        return ResponseInput.model_validate(fields), stream
    except ValidationError as exc:
        error = max(exc.errors(), key=lambda e: len(e["loc"]))  # the deepest: the real fault
        param = ".".join(str(part) for part in error["loc"] if not _union_tag(part)) or None
        if error["type"] == "extra_forbidden":
            raise OpenAIError(400, f"unsupported parameter: {param}", param=param) from None
        raise OpenAIError(400, f"invalid {param}: {error['msg']}", param=param) from None


def _union_tag(part: int | str) -> bool:
    """A step of a validation error's location that names a union member, not a field."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def _create_schema() -> dict[str, Any]:
    schema = ResponseInput.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    schema["properties"]["stream"] = {"type": "boolean", "default": False}
    for name in sorted(_IGNORED):
        schema["properties"][name] = {"description": "accepted, not acted on"}
    schema["properties"]["tools"] = {
        "description": "accepted when empty",
        "anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
    }
    plain = {"type": "object", "properties": {"format": {"const": {"type": "text"}}}}
    schema["properties"]["text"] = {
        "description": "accepted as plain text only",
        "anyOf": [{**plain, "additionalProperties": False}, {"type": "null"}],
    }
    return schema


def _plain_text(value: JSON) -> bool:
    return value is None or value == {} or value == {"format": {"type": "text"}}


@router.post(
    "/v1/responses",
    operation_id="createResponse",
    response_model=None,
    responses={
        200: {
            "description": "The Response, or its events (text/event-stream)",
            "content": _RESPONSE_CONTENT,
            "links": RESPONSE_LINKS,
        },
        **_errors(409),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _create_schema()}},
        }
    },
)
async def create_response(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Create a response. ``background: true`` answers at once with the queued Response;
    otherwise the request waits for it. ``stream: true`` streams its events either way. The
    work is a job of kind ``response``: a dropped connection never stops it."""
    app = state.app
    request_input, stream = _request_of(
        parse_json(await read_body(request, state.settings.max_body_bytes))
    )
    if state.pending is not None:
        await admit(app, state.pending, tenant)
    job, _ = await app.submit_idempotent(
        RESPONSE_KIND,
        request_input.model_dump(mode="json"),
        tenant=tenant,
        metadata={"model": request_input.model},
        idempotency_key=idempotency_key,
    )
    if stream:
        return _stream(request, state, job, tenant, after=-1)
    if not request_input.background:
        while not job.is_terminal and not await request.is_disconnected():
            job = await app.wait(job.id, timeout=_INLINE_WAIT_SECONDS, tenant=tenant)
    return await _response_json(app, job, tenant)


# -- retrieve, cancel, delete ----------------------------------------------------------------------
@router.get(
    "/v1/responses/{response_id}",
    operation_id="getResponse",
    response_model=None,
    responses={
        200: {"description": "The Response, or its events", "content": _RESPONSE_CONTENT},
        **_errors(404),
    },
)
async def get_response(
    response_id: str,
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1, le=MAX_SEQUENCE)] = None,
    last_event_id: Annotated[int | None, Header(ge=-1, le=MAX_SEQUENCE)] = None,
) -> Response:
    """The Response; with ``stream=true`` its events after ``starting_after`` (or the
    ``Last-Event-ID`` header), replayed from the start when neither is given, then live."""
    job = await _job(state.app, response_id, tenant)
    if stream:
        cursor = last_event_id if last_event_id is not None else starting_after
        return _stream(request, state, job, tenant, after=-1 if cursor is None else cursor)
    return await _response_json(state.app, job, tenant)


@router.post(
    "/v1/responses/{response_id}/cancel",
    operation_id="cancelResponse",
    response_model=None,
    responses=_errors(404),
)
async def cancel_response(response_id: str, state: StateDep, tenant: TenantDep) -> Response:
    """Cancel: a queued response at once, one in progress as soon as its worker has closed the
    upstream stream (the text so far is kept). Idempotent; a finished response is returned as
    it is, and ``cancelled`` stays ``cancelled``."""
    app = state.app
    job = await _job(app, response_id, tenant)
    if not job.is_terminal:
        job = await _translate_missing(app.cancel(job.id, tenant=tenant), response_id)
        if not job.is_terminal:
            job = await app.wait(job.id, timeout=_CANCEL_WAIT_SECONDS, tenant=tenant)
    return await _response_json(app, job, tenant)


@router.delete(
    "/v1/responses/{response_id}",
    operation_id="deleteResponse",
    response_model=None,
    responses=_errors(404),
)
async def delete_response(response_id: str, state: StateDep, tenant: TenantDep) -> Response:
    """Forget the response (cancelling it first if it still runs)."""
    job = await _job(state.app, response_id, tenant)
    await _translate_missing(state.app.delete(job.id, tenant=tenant), response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(wire_json(body), media_type="application/json")


async def _translate_missing(call: Coroutine[Any, Any, T], response_id: str) -> T:
    try:
        return await call
    except JobNotFound:
        raise _not_found(response_id) from None


async def _job(app: App, response_id: str, tenant: str) -> Job:
    """The job behind ``response_id`` for this tenant; 404 for any other id."""
    job_id = job_id_of(response_id)
    if job_id is None:
        raise _not_found(response_id)
    job = await _translate_missing(app.get(job_id, tenant=tenant), response_id)
    if job.kind != RESPONSE_KIND:
        raise _not_found(response_id)
    return job


async def _response_json(app: App, job: Job, tenant: str) -> Response:
    return Response(
        wire_json(await current_response(app, job, tenant)), media_type="application/json"
    )


async def current_response(app: App, job: Job, tenant: str) -> dict[str, JSON]:
    """The Response of ``job`` now: the result's text once completed, else the stored deltas."""
    result = None
    if job.status is Status.COMPLETED:
        raw = job.result  # a result of a few KiB comes with the job: no second read
        if raw is None and not job.result_expired:
            stored = await app.result(job.id, tenant=tenant)
            raw = None if stored is None else pydantic_core.from_json(stored.body)
        result = result_of(raw)
    if result is not None:
        text = result.text
    else:
        backend = await app.open()
        text = await _translate_missing(_TEXTS.text(backend, tenant, job.id), job.id)
    return response_object(job, text, result)


_TEXTS = OutputTexts()
"""The text of the responses this process has looked at, read on from where it was."""


# -- streams ---------------------------------------------------------------------------------------
def _stream(request: Request, state: APIState, job: Job, tenant: str, *, after: int) -> Response:
    frames = _frames(state, job, tenant, after=after)
    return stream_response(request, state, frames, tenant)


def _frame(event: dict[str, JSON]) -> bytes:
    data = pydantic_core.to_json(event, inf_nan_mode="null")
    kind = str(event["type"]).encode()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event["sequence_number"], kind, data)


async def _frames(
    state: APIState, job: Job, tenant: str, *, after: int
) -> AsyncGenerator[bytes, None]:
    """The SSE body: the Response events after ``after`` (the mapping of the whole event log,
    so numbers never change), live until the final event. Ends quietly when the job is deleted,
    the store fails or the server shuts down; the client resumes with ``starting_after``."""
    # No ``retry:`` frame: OpenAI's SDKs read every frame as JSON data.
    app = state.app
    backend = await app.open()
    mapper = ResponseEvents(job)
    batches = follow_events(
        backend, tenant, job.id, after=-1, idle=state.keepalive_seconds, closing=state.closing
    )
    try:
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if not batch:
                    yield b": keepalive\n\n"
                    continue
                out: list[dict[str, JSON]] = []
                for event in batch:
                    final = None
                    if event.type == "status" and event.data.get("status") in _TERMINAL:
                        now = await app.get(job.id, tenant=tenant)
                        final = await current_response(app, now, tenant)
                    out += mapper.feed(event, final)
                frames = [_frame(e) for e in out if e["sequence_number"] > after]
                if frames:
                    yield b"".join(frames)
    except (JobNotFound, StorageError) as exc:
        logger.warning("response stream of %s ended early: %s", job.id, type(exc).__name__)


_TERMINAL = frozenset(s.value for s in Status if s.is_terminal)
