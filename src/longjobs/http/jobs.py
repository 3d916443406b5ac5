"""The ``/v1/jobs`` routes (submit, status, list, cancel, delete, result) and ``/v1/kinds``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Annotated

import pydantic_core
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from longjobs.app import App, JobKind, request_hash
from longjobs.http.auth import tenant_of
from longjobs.http.dependencies import AppDep, SettingsDep, TenantDep
from longjobs.http.limits import PendingGate
from longjobs.http.openapi import (
    IDEMPOTENCY_KEY,
    JOB_HEADERS,
    JOB_LINKS,
    NEXT_PAGE_LINK,
    PREFER,
    SUBMIT_HEADERS,
    submit_request_schema,
)
from longjobs.http.problems import AUTHENTICATED, ProblemError, documented, problem_response
from longjobs.http.state import state_of
from longjobs.http.submission import (
    Preferences,
    check_input,
    parse_json,
    parse_submission,
    read_body,
)
from longjobs.http.webhooks import check_webhook_url
from longjobs.models import JSON, Job, Status
from longjobs.schemas import (
    JobList,
    JobResource,
    KindDefaults,
    KindList,
    KindResource,
    SubmitRequest,
    rfc3339,
)
from longjobs.settings import Settings

router = APIRouter(responses=AUTHENTICATED)

POLL_AFTER_SECONDS = 1
"""The ``Retry-After`` sent with a job that is not finished yet."""


# -- converting jobs to their wire shape --------------------------------------------------------
def job_wire(job: Job, *, root_path: str, inline_result_bytes: int) -> dict[str, JSON]:
    """``job`` as API.md shows it (the ``JobResource`` schema), as plain JSON values. The result
    is inline only when it is at most ``inline_result_bytes`` long and has not expired; tenancy
    and lease internals never show. Built by hand rather than through the pydantic model: every
    value comes from a stored, already valid job, and the model's work was a sixth of a
    submission's cost (the API tests check the shape against the schema)."""
    path = f"{root_path}/v1/jobs/{job.id}"
    inline = job.result_size is not None and job.result_size <= inline_result_bytes
    error = job.error
    return {
        "id": job.id,
        "object": "job",
        "kind": job.kind,
        "status": job.status.value,
        "progress": job.progress,
        "stage": job.stage,
        "message": job.message,
        "eta_seconds": job.eta_seconds,
        "input": job.input,
        "result": job.result if inline and not job.result_expired else None,
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "retryable": error.retryable},
        "cancel_requested": job.cancel_requested,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "metadata": job.metadata,
        "webhook": None if job.webhook_url is None else {"url": job.webhook_url},
        "usage": {
            "input_tokens": job.usage.input_tokens,
            "output_tokens": job.usage.output_tokens,
        },
        "created_at": rfc3339(job.created_at),
        "started_at": _rfc3339_or_none(job.started_at),
        "finished_at": _rfc3339_or_none(job.finished_at),
        "expires_at": _rfc3339_or_none(job.expires_at),
        "links": {
            "self": path,
            "events": f"{path}/events",
            "result": f"{path}/result",
            "cancel": f"{path}/cancel",
        },
    }


def _rfc3339_or_none(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def wire_json(value: JSON) -> bytes:
    """JSON of a wire value, compact, written as the API's pydantic models write theirs
    (pydantic's own encoder: a NaN or an infinity becomes null)."""
    return pydantic_core.to_json(value, inf_nan_mode="null")


def root_path_of(request: Request) -> str:
    """Where the API is mounted (links and Location headers start with it)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def job_response(
    request: Request,
    settings: Settings,
    job: Job,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The job resource as JSON, with ``Retry-After`` while the job is not terminal."""
    resource = job_wire(
        job, root_path=root_path_of(request), inline_result_bytes=settings.inline_result_bytes
    )
    all_headers = dict(headers or {})
    if not job.is_terminal:
        all_headers["Retry-After"] = str(POLL_AFTER_SECONDS)
    return Response(
        wire_json(resource),
        status_code=status_code,
        headers=all_headers,
        media_type="application/json",
    )


# -- submit --------------------------------------------------------------------------------------
@router.post(
    "/v1/jobs",
    operation_id="submitJob",
    status_code=202,
    response_model=None,
    responses={
        200: {
            "model": JobResource,
            "description": "Finished within Prefer: wait, or a replay",
            "headers": SUBMIT_HEADERS,
            "links": JOB_LINKS,
        },
        202: {
            "model": JobResource,
            "description": "Accepted",
            "headers": SUBMIT_HEADERS,
            "links": JOB_LINKS,
        },
        **documented(400, 404, 413, 422, 503),
    },
    # The route reads its headers and caller itself: FastAPI's dependency solving cost a third
    # of a submission's CPU. The document says what the parameters would have said.
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY, PREFER],
        "security": [{"apiKey": []}],
        "requestBody": {
            "required": True,
            # WebhookTarget, the one model it refers to, is a component (of JobResource).
            "content": {"application/json": {"schema": submit_request_schema({})}},
        },
    },
)
async def submit_job(request: Request) -> Response:
    """Validate and durably enqueue a job: 202 with the job, ``Location`` and ``Retry-After``.

    ``Prefer: wait=N`` waits up to ``min(N, max_wait_seconds)`` and answers 200 when the job
    finished by then. A replay of an ``Idempotency-Key`` answers 200 with the original job and
    ``Idempotent-Replayed: true``.
    """
    state = state_of(request)
    app, settings = state.app, state.settings
    tenant = await tenant_of(request)
    idempotency_key = _idempotency_key(request)
    submission = parse_submission(parse_json(await read_body(request, settings.max_body_bytes)))
    check_input(app.kind(submission.kind), submission.input)
    webhook_url = None
    if submission.webhook is not None:
        webhook_url = submission.webhook.url
        await check_webhook_url(state, webhook_url, ("body", "webhook", "url"))
    preferences = Preferences.parse(request.headers.getlist("prefer"))  # before the commit
    if state.pending is not None:
        await admit(app, state.pending, tenant)
    job, created = await app.submit_idempotent(
        submission.kind,
        submission.input,
        tenant=tenant,
        priority=submission.priority,
        timeout_seconds=submission.timeout_seconds,
        max_attempts=submission.max_attempts,
        result_ttl_seconds=submission.result_ttl_seconds,
        delay_seconds=submission.delay_seconds,
        metadata=submission.metadata,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
        body_hash=None if idempotency_key is None else _hash(submission),
    )
    headers = {"Location": f"{root_path_of(request)}/v1/jobs/{job.id}", "Vary": "Prefer"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    job, applied = await _apply_preferences(app, settings, tenant, job, preferences)
    if applied:
        headers["Preference-Applied"] = ", ".join(applied)
    status_code = 200 if not created or job.is_terminal else 202
    return job_response(request, settings, job, status_code=status_code, headers=headers)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        errors = [
            {"loc": ["header", "idempotency-key"], "msg": "must be 1 to 255 characters",
             "type": "string_length"}
        ]  # fmt: skip
        raise ProblemError("invalid-input", "invalid header.idempotency-key", errors=errors)
    return key


async def admit(app: App, gate: PendingGate, tenant: str) -> None:
    """Let a submission through the tenant's cap on pending jobs (429 when it is full)."""
    backend = await app.open()
    await gate.admit(tenant, lambda: backend.count_pending(tenant, limit=gate.limit))


def _hash(submission: SubmitRequest) -> str:
    # The whole envelope, as sent: the same key with other options is a different request.
    return request_hash(submission.kind, submission.model_dump(mode="json"))


async def _apply_preferences(
    app: App, settings: Settings, tenant: str, job: Job, preferences: Preferences
) -> tuple[Job, list[str]]:
    applied = ["respond-async"] if preferences.respond_async else []
    if preferences.wait is not None:
        wait = min(float(preferences.wait), settings.max_wait_seconds)
        if not job.is_terminal and wait > 0:
            job = await app.wait(job.id, timeout=wait, tenant=tenant)
        applied.append(f"wait={int(wait) if wait.is_integer() else wait}")
    return job, applied


# -- read, list, cancel, delete ------------------------------------------------------------------
@router.get(
    "/v1/jobs/{job_id}",
    operation_id="getJob",
    response_model=None,
    responses={200: {"model": JobResource, "headers": JOB_HEADERS}, **documented(404, 422, 503)},
)
async def get_job(
    job_id: str,
    request: Request,
    app: AppDep,
    settings: SettingsDep,
    tenant: TenantDep,
    wait: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
) -> Response:
    """The job (404 when missing or another tenant's). ``?wait=N`` blocks up to N seconds (at
    most ``max_wait_seconds``) until the job is terminal or its status changes."""
    job = await app.get(job_id, tenant=tenant)
    timeout = min(wait or 0.0, settings.max_wait_seconds)
    if not job.is_terminal and timeout > 0:
        job = await app.wait(job_id, timeout=timeout, tenant=tenant, until_change_from=job.status)
    return job_response(request, settings, job)


_STATUS = "|".join(status.value for status in Status)
_STATUS_LIST = f"^({_STATUS})(,({_STATUS}))*$"
StatusFilter = Annotated[
    list[str] | None,
    Query(
        description="Only jobs in one of these statuses: repeat the parameter or separate "
        "statuses with commas",
        json_schema_extra={"items": {"type": "string", "pattern": _STATUS_LIST}},
    ),
]
KindFilter = Annotated[
    list[str] | None,
    Query(
        description="Only jobs of one of these kinds: repeat the parameter or separate kinds "
        "with commas"
    ),
]


@router.get(
    "/v1/jobs",
    operation_id="listJobs",
    response_model=None,
    responses={
        200: {
            "model": JobList,
            "links": {"next": NEXT_PAGE_LINK},
        },
        **documented(422, 503),
    },
)
async def list_jobs(
    request: Request,
    app: AppDep,
    settings: SettingsDep,
    tenant: TenantDep,
    status: StatusFilter = None,
    kind: KindFilter = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """The tenant's jobs, newest first, filtered by any of the statuses and kinds (each repeated
    or comma-separated); ``next_cursor`` fetches the next page and is null on the last one."""
    statuses = [status_value(value) for value in split_values(status)]
    try:
        page = await app.list(
            tenant=tenant, status=statuses, kind=split_values(kind), limit=limit, cursor=cursor
        )
    except ValueError:
        raise _invalid_query("cursor", "not a cursor this API gave out", "value_error") from None
    root_path = root_path_of(request)
    listing = {
        "object": "list",
        "data": [
            job_wire(job, root_path=root_path, inline_result_bytes=settings.inline_result_bytes)
            for job in page.data
        ],
        "next_cursor": page.next_cursor,
    }
    return Response(wire_json(listing), media_type="application/json")


def split_values(values: list[str] | None) -> list[str]:
    """Query values, each repeated or comma-separated, as one list."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def status_value(value: str) -> Status:
    """A ``status`` query value; a 422 problem if it is not a status."""
    try:
        return Status(value)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise _invalid_query("status", f"must be one of {names}", "enum") from None


def _invalid_query(name: str, msg: str, type_: str) -> ProblemError:
    errors = [{"loc": ["query", name], "msg": msg, "type": type_}]
    return ProblemError("invalid-input", f"invalid query.{name}", errors=errors)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    operation_id="cancelJob",
    response_model=None,
    responses={200: {"model": JobResource, "headers": JOB_HEADERS}, **documented(404, 503)},
)
async def cancel_job(
    job_id: str, request: Request, app: AppDep, settings: SettingsDep, tenant: TenantDep
) -> Response:
    """Cancel: a pending job at once, a running one through its handler (``cancel_requested``
    until it stops); a terminal job is answered as it is."""
    job = await app.cancel(job_id, tenant=tenant)
    return job_response(request, settings, job)


@router.delete(
    "/v1/jobs/{job_id}", operation_id="deleteJob", status_code=204, responses=documented(404, 503)
)
async def delete_job(job_id: str, app: AppDep, tenant: TenantDep) -> Response:
    """Forget the job with its events and result (cancelling it first if it runs): 204."""
    await app.delete(job_id, tenant=tenant)
    return Response(status_code=204)


# -- result --------------------------------------------------------------------------------------
@router.get(
    "/v1/jobs/{job_id}/result",
    operation_id="getJobResult",
    response_model=None,
    responses={
        200: {"description": "The result as stored", "content": {"application/json": {}}},
        **documented(404, 409, 410, 503),
    },
)
async def get_result(job_id: str, app: AppDep, tenant: TenantDep) -> Response:
    """The stored result with its content type. 409 while the job is not finished (with
    ``Retry-After``) and for failed or cancelled jobs (with their error); 410 once expired."""
    job = await app.get(job_id, tenant=tenant)
    _raise_unless_completed(job)
    stored = None if job.result_expired else await app.stream_result(job_id, tenant=tenant)
    if stored is None:
        return problem_response(
            "result-expired", f"the result of job {job_id!r} has expired", job_id=job_id
        )
    first = await anext(stored.chunks, b"")
    if len(first) == stored.size:  # all of it in one part: an ordinary response
        return Response(first, media_type=stored.content_type)
    return StreamingResponse(
        _then(first, stored.chunks),
        media_type=stored.content_type,
        headers={"Content-Length": str(stored.size)},
    )


async def _then(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """``first``, then the rest of a result; a result that expires midway ends the response
    short of its Content-Length, which clients see as an error (never a silent truncation)."""
    yield first
    async with contextlib.aclosing(rest):
        async for chunk in rest:
            yield chunk


def _raise_unless_completed(job: Job) -> None:
    error = None if job.error is None else job.error.model_dump()
    if job.status is Status.FAILED:
        raise ProblemError(
            "job-failed", f"job {job.id!r} failed: no result", job_id=job.id, error=error
        )
    if job.status is Status.CANCELLED:
        raise ProblemError(
            "job-cancelled", f"job {job.id!r} was cancelled: no result", job_id=job.id, error=error
        )
    if not job.is_terminal:
        raise ProblemError(
            "result-not-ready",
            f"job {job.id!r} is {job.status.value}; try again later",
            job_id=job.id,
            job_status=job.status.value,
            retry_after=POLL_AFTER_SECONDS,
        )


# -- kinds ---------------------------------------------------------------------------------------
@router.get(
    "/v1/kinds", operation_id="listKinds", response_model=None, responses={200: {"model": KindList}}
)
async def list_kinds(app: AppDep, tenant: TenantDep) -> Response:
    """The registered job kinds, sorted by name, with their JSON Schemas and defaults."""
    kinds = [_kind_resource(app, app.kinds[name]) for name in sorted(app.kinds)]
    return Response(KindList(data=kinds).model_dump_json(), media_type="application/json")


def _kind_resource(app: App, kind: JobKind) -> KindResource:
    return KindResource(
        name=kind.name,
        description=kind.description,
        input_schema=kind.input_schema(),
        output_schema=kind.output_schema(),
        defaults=KindDefaults(
            timeout_seconds=kind.timeout_seconds,
            max_attempts=kind.max_attempts,
            result_ttl_seconds=kind.result_ttl_seconds or app.settings.result_ttl_seconds,
        ),
    )


# -- usage ---------------------------------------------------------------------------------------
@router.get("/v1/usage", operation_id="getUsage", response_model=None, responses={200: {}})
async def get_usage(app: AppDep, tenant: TenantDep) -> Response:
    """The model tokens the caller's stored jobs spent: in total and per kind. A job counts
    what every attempt reported, also when it was cancelled or failed; deleted jobs no longer
    count."""
    backend = await app.open()
    by_kind = await backend.usage_by_kind(tenant)
    spent_in = sum(usage.input_tokens for usage in by_kind.values())
    spent_out = sum(usage.output_tokens for usage in by_kind.values())
    body = {
        "object": "usage",
        "jobs": sum(usage.jobs for usage in by_kind.values()),
        "input_tokens": spent_in,
        "output_tokens": spent_out,
        "total_tokens": spent_in + spent_out,
        "by_kind": {
            kind: {
                "jobs": usage.jobs,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            }
            for kind, usage in sorted(by_kind.items())
        },
    }
    return Response(wire_json(body), media_type="application/json")
