"""RFC 9457 problem details: every non-2xx answer of the API is ``application/problem+json``.

Each problem has a stable relative ``type`` URI (``/problems/<slug>``) and a fixed status and
title, listed in ``PROBLEMS``. Routes raise ``ProblemError``; the handlers of
``problem_handlers()`` turn that, the longjobs errors, FastAPI's request validation errors,
Starlette's 404/405 and any other exception into a problem body. The catch-all answers 500
``/problems/internal`` and never shows a traceback or an exception's text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from longjobs.errors import (
    IdempotencyConflict,
    InvalidInput,
    JobNotFound,
    StorageUnavailable,
    UnknownKind,
)
from longjobs.schemas import Problem

PROBLEM_JSON = "application/problem+json"

PROBLEMS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "malformed-json": (400, "Malformed JSON"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Not found"),
    "job-not-found": (404, "Job not found"),
    "unknown-kind": (404, "Unknown job kind"),
    "webhook-not-found": (404, "Webhook endpoint not found"),
    "delivery-not-found": (404, "Webhook delivery not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "result-not-ready": (409, "Result not ready"),
    "job-failed": (409, "Job failed"),
    "job-cancelled": (409, "Job cancelled"),
    "too-many-webhooks": (409, "Too many webhook endpoints"),
    "delivery-blocked": (409, "Webhook endpoint disabled or deleted"),
    "result-expired": (410, "Result expired"),
    "payload-too-large": (413, "Payload too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "invalid-input": (422, "Invalid input"),
    "idempotency-conflict": (422, "Idempotency key reused"),
    "too-many-requests": (429, "Too many requests"),
    "internal": (500, "Internal server error"),
    "not-ready": (503, "Not ready"),
    "storage-unavailable": (503, "Storage unavailable"),
}
"""Every problem type the API answers with: slug → (HTTP status, title)."""


def _header(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


RETRY_AFTER = _header(
    "Seconds to wait before trying again", {"type": "integer", "minimum": 1}, required=False
)
"""The OpenAPI description of a ``Retry-After`` answer header (whole seconds)."""

PROBLEM_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": _header(
            "The Bearer challenge", {"type": "string", "pattern": "^Bearer "}, required=True
        )
    },
    409: {"Retry-After": RETRY_AFTER},
    429: {"Retry-After": {**RETRY_AFTER, "required": True}},
    503: {"Retry-After": RETRY_AFTER},
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring a problem body for each of ``statuses``, with the headers
    that come with it (``WWW-Authenticate`` on 401, ``Retry-After`` on 409, 429 and 503)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": Problem, "content": {PROBLEM_JSON: {}}}
        if status in PROBLEM_HEADERS:
            responses[status]["headers"] = PROBLEM_HEADERS[status]
    return responses


AUTHENTICATED = documented(401, 429)
"""The answers every route needing an API key may give: no valid key, or over the rate limit."""

_SLUG_OF_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    429: "too-many-requests",
    503: "not-ready",
}


class ProblemError(Exception):
    """Raised by a route to answer with the problem ``slug`` (a key of ``PROBLEMS``).

    ``extra`` members (``errors``, ``job_id``, ``retry_after``, ``error``...) are added to the
    body when not None; ``headers`` are sent with it.

    >>> raise ProblemError("job-not-found", "job 'job_x' not found", job_id="job_x")
    Traceback (most recent call last):
    longjobs.http.problems.ProblemError: job 'job_x' not found
    """

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if slug not in PROBLEMS:
            raise ValueError(f"unknown problem type {slug!r}")
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The ``application/problem+json`` response for problem ``slug``; None members are left out.

    A ``retry_after`` member also sets the ``Retry-After`` header (whole seconds, rounded up).
    """
    status, title = PROBLEMS[slug]
    body: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update({name: value for name, value in extra.items() if value is not None})
    all_headers = dict(headers or {})
    retry_after = extra.get("retry_after")
    if retry_after is not None:
        all_headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))
    return JSONResponse(body, status_code=status, headers=all_headers, media_type=PROBLEM_JSON)


def field_errors(
    errors: Sequence[Mapping[str, Any]], prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """Validation errors as ``[{"loc", "msg", "type"}]``, ``loc`` prefixed; inputs never echoed."""
    return [
        {"loc": [*prefix, *error["loc"]], "msg": str(error["msg"]), "type": str(error["type"])}
        for error in errors
    ]


def invalid_input_detail(errors: Sequence[Mapping[str, Any]]) -> str:
    """A one-line summary naming the fields at fault, e.g. ``invalid body.priority, body.kind``."""
    names = [".".join(str(part) for part in error["loc"]) or "request" for error in errors]
    return "invalid " + ", ".join(names)


# -- handlers -----------------------------------------------------------------------------------
async def _on_problem(request: Request, exc: ProblemError) -> Response:
    return problem_response(exc.slug, exc.detail, headers=exc.headers, **exc.extra)


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    slug = _SLUG_OF_STATUS.get(exc.status_code)
    if slug is None:
        slug = "internal" if exc.status_code >= 500 else "bad-request"
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404:
        detail = f"no route for {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return problem_response(slug, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's Allow names the methods of the first route on the path only; GET and POST
    # /v1/jobs are two routes, so gather the methods of every route on the path.
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.PARTIAL and isinstance(route, Route):
            methods |= route.methods or set()
    return sorted(methods)


async def _on_request_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = field_errors(exc.errors())
    return problem_response("invalid-input", invalid_input_detail(errors), errors=errors)


async def _on_job_not_found(request: Request, exc: JobNotFound) -> Response:
    return problem_response("job-not-found", str(exc), job_id=exc.job_id)


async def _on_unknown_kind(request: Request, exc: UnknownKind) -> Response:
    return problem_response("unknown-kind", str(exc), kind=exc.kind)


async def _on_invalid_input(request: Request, exc: InvalidInput) -> Response:
    # InvalidInput only comes out of a submission, whose input sits at body.input.
    errors = field_errors(exc.errors, prefix=("body", "input"))
    return problem_response("invalid-input", invalid_input_detail(errors), errors=errors)


async def _on_idempotency_conflict(request: Request, exc: IdempotencyConflict) -> Response:
    detail = "this Idempotency-Key was already used with a different request body"
    return problem_response("idempotency-conflict", detail)


async def _on_storage_unavailable(request: Request, exc: StorageUnavailable) -> Response:
    detail = "the job store is unavailable; try again later"
    return problem_response("storage-unavailable", detail, retry_after=exc.retry_after)


async def _on_any_exception(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware logs and re-raises the exception for the server to log;
    # the client only learns that something went wrong.
    return problem_response("internal", "the server could not complete the request")


ProblemHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def problem_handlers() -> dict[int | type[Exception], ProblemHandler]:
    """The exception handlers that make every error answer a problem body, replacing FastAPI's
    defaults; pass them as ``FastAPI(exception_handlers=...)``."""
    return {
        ProblemError: _on_problem,
        StarletteHTTPException: _on_http_exception,
        RequestValidationError: _on_request_validation,
        JobNotFound: _on_job_not_found,
        UnknownKind: _on_unknown_kind,
        InvalidInput: _on_invalid_input,
        IdempotencyConflict: _on_idempotency_conflict,
        StorageUnavailable: _on_storage_unavailable,
        Exception: _on_any_exception,
    }
