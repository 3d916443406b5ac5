"""The OpenAPI document of the API: what the routes declare beyond their signatures (links,
answer headers, the ``Prefer`` header), and FastAPI's document corrected to say what the API
really does:

- FastAPI puts a response ``model`` under ``application/json`` and documents its own validation
  error shape for 422; this API answers every error as ``application/problem+json`` (RFC 9457)
  with the ``Problem`` schema.
- FastAPI documents an optional parameter ``x: int | None = None`` as ``integer or null``; the
  way to say "none" is to leave the parameter out, and ``null`` is no value of a header or a
  query string, so only the non-null schema is kept.
- The submission body names the App's job kinds, each with its own input schema: a body is
  accepted only for a registered kind (else 404) with an input valid for it (else 422).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from longjobs.app import App, JobKind
from longjobs.http.problems import PROBLEM_JSON, RETRY_AFTER
from longjobs.responses import ResponseInput
from longjobs.schemas import SubmitRequest

DESCRIPTION = """\
Durable background jobs for long AI operations: submit a job (`202` with a status URL), follow
its progress by polling, Server-Sent Events or WebSocket, fetch its result, cancel it at any time.

* Authentication: `Authorization: Bearer <key>` (keys from `longjobs keys create`). A server
  with no key yet is open, with the one tenant `default`.
* Errors: every non-2xx answer is `application/problem+json` (RFC 9457) with a stable `type`,
  but on `/v1/responses`, which speaks OpenAI's Responses API (background mode) for the
  `openai` SDKs and answers errors in OpenAI's shape: `{"error": {"message", "type", "param",
  "code"}}`.
* Sync fast path: `Prefer: wait=N` on `POST /v1/jobs` answers `200` with the finished job when
  it ends within N seconds (capped by the server), else `202`.
* WebSocket: `GET /v1/jobs/{job_id}/ws` (not listed below, OpenAPI cannot describe it) sends the
  same events as the SSE stream as JSON text frames, resumes after `?after=N`, and accepts
  `{"type": "cancel"}` from the client.
"""

# -- what the routes declare ------------------------------------------------------------------
_JOB_ID = {"job_id": "$response.body#/id"}
JOB_LINKS = {
    "get": {"operationId": "getJob", "parameters": _JOB_ID, "description": "Poll the job"},
    "events": {
        "operationId": "getJobEvents",
        "parameters": _JOB_ID,
        "description": "Follow its events",
    },
    "result": {
        "operationId": "getJobResult",
        "parameters": _JOB_ID,
        "description": "Fetch its result",
    },
    "cancel": {"operationId": "cancelJob", "parameters": _JOB_ID, "description": "Cancel it"},
    "delete": {"operationId": "deleteJob", "parameters": _JOB_ID, "description": "Forget it"},
}
"""OpenAPI links from an answer holding a job to the operations on that job."""

JOB_HEADERS = {"Retry-After": RETRY_AFTER}
"""The headers of an answer holding a job: ``Retry-After`` while it is not finished."""

_RESPONSE_ID = {"response_id": "$response.body#/id"}
RESPONSE_LINKS = {
    "get": {"operationId": "getResponse", "parameters": _RESPONSE_ID, "description": "Poll it"},
    "cancel": {
        "operationId": "cancelResponse",
        "parameters": _RESPONSE_ID,
        "description": "Cancel it",
    },
    "delete": {
        "operationId": "deleteResponse",
        "parameters": _RESPONSE_ID,
        "description": "Forget it",
    },
}
"""OpenAPI links from an answer holding a Response to the operations on it."""

_WEBHOOK_ID = {"webhook_id": "$response.body#/id"}
WEBHOOK_LINKS = {
    name: {"operationId": operation, "parameters": _WEBHOOK_ID, "description": description}
    for name, operation, description in (
        ("get", "getWebhook", "Read the endpoint"),
        ("update", "updateWebhook", "Change it"),
        ("rotate", "rotateWebhookSecret", "Rotate its secret"),
        ("delete", "deleteWebhook", "Remove it"),
    )
}
"""OpenAPI links from an answer holding a webhook endpoint to the operations on it."""

SUBMIT_HEADERS = {
    "Location": {
        "description": "The job's URL",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": RETRY_AFTER,
    "Preference-Applied": {
        "description": "The Prefer preferences honoured, e.g. `wait=10`",
        "required": False,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the job an earlier request with the same "
        "Idempotency-Key made",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
}
"""The headers of a submission's 200 and 202."""

PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "RFC 7240 preferences: `wait=N` waits up to N seconds (capped by the server) "
    "and answers 200 with the job if it finished by then; `respond-async` answers 202 at once. "
    "Preferences the server does not know are ignored.",
    "schema": {"type": "string"},
    "examples": {"wait": {"value": "wait=10"}, "async": {"value": "respond-async"}},
}
"""The ``Prefer`` request header of a submission (read from the raw headers, not a parameter)."""

IDEMPOTENCY_KEY = {
    "name": "idempotency-key",
    "in": "header",
    "required": False,
    "description": "A key of your choice (1 to 255 characters), kept at least 24 hours per "
    "tenant: the same key with the same body returns the first job (200, "
    "`Idempotent-Replayed: true`), never a second one; with another body it is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
"""The ``Idempotency-Key`` request header of a submission (read from the raw headers)."""

NEXT_PAGE_LINK = {
    "operationId": "listJobs",
    "parameters": {"cursor": "$response.body#/next_cursor"},
    "description": "The next page, while next_cursor is not null",
}


# -- corrections to FastAPI's document ---------------------------------------------------------
_VALIDATION_REFS = {
    "#/components/schemas/HTTPValidationError",
    "#/components/schemas/ValidationError",
}
_COMPONENT = "#/components/schemas/"
_NO_INPUT = {
    "anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}],
    "description": "This kind takes no input: null, {} or nothing.",
}


def install(api: FastAPI, app: App) -> None:
    """Make ``api.openapi()`` (served at ``/openapi.json``) return the corrected document.

    It is built on the first request, so it names the kinds registered by then.
    """

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title,
                version=api.version,
                openapi_version=api.openapi_version,
                description=DESCRIPTION,
                routes=api.routes,
            )
            _describe_problems(document)
            _describe_responses_api(document)
            _drop_null_from_parameters(document)
            _describe_submissions(document, app.kinds)
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _describe_problems(document: dict[str, Any]) -> None:
    for path, operations in document.get("paths", {}).items():
        if path.startswith(_RESPONSES_API):
            continue  # errors in OpenAI's shape
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if PROBLEM_JSON in content or schema.get("$ref") in _VALIDATION_REFS:
                    content.pop("application/json", None)
                    content[PROBLEM_JSON] = {"schema": {"$ref": "#/components/schemas/Problem"}}
    schemas = document.get("components", {}).get("schemas", {})
    for ref in _VALIDATION_REFS:
        schemas.pop(ref.rsplit("/", 1)[1], None)


_RESPONSES_API = "/v1/responses"


def _describe_responses_api(document: dict[str, Any]) -> None:
    """``/v1/responses`` answers bad parameters with 400 (as OpenAI does), never 422; its
    request body refers to the message models of ``ResponseInput``."""
    for path, operations in document.get("paths", {}).items():
        if path.startswith(_RESPONSES_API):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    definitions = ResponseInput.model_json_schema(ref_template=_COMPONENT + "{model}")
    schemas.update(definitions.get("$defs", {}))
    for ref in _VALIDATION_REFS:
        schemas.pop(ref.rsplit("/", 1)[1], None)


def _drop_null_from_parameters(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                variants = schema.get("anyOf", [])
                kept = [variant for variant in variants if variant != {"type": "null"}]
                if not parameter.get("required") and len(kept) == 1 < len(variants):
                    del schema["anyOf"]
                    # What the parameter itself declares (its json_schema_extra) wins.
                    merged = {**kept[0], **schema}
                    schema.clear()
                    schema.update(merged)


def _describe_submissions(document: dict[str, Any], kinds: Mapping[str, JobKind]) -> None:
    if not kinds:
        return  # every kind is unknown: the generic envelope says all there is to say
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    envelope = submit_request_schema(schemas)
    bodies = [_submission_of(envelope, kinds[name], schemas) for name in sorted(kinds)]
    submit = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    submit["schema"] = {"oneOf": bodies}


def submit_request_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the submission envelope; the models it refers to join ``schemas``."""
    envelope = SubmitRequest.model_json_schema(ref_template=_COMPONENT + "{model}")
    schemas.update(envelope.pop("$defs", {}))
    return envelope


def _submission_of(
    envelope: dict[str, Any], kind: JobKind, schemas: dict[str, Any]
) -> dict[str, Any]:
    """The submission envelope with ``kind`` fixed and ``input`` its schema; the input schema's
    definitions join the document's components, prefixed with the kind's name."""
    body = copy.deepcopy(envelope)
    body["title"] = kind.name
    body["description"] = kind.description or f"Submit a {kind.name} job."
    body["properties"]["kind"] = {"type": "string", "const": kind.name}
    if kind.input_adapter is None:
        body["properties"]["input"] = _NO_INPUT
    else:
        prefix = re.sub(r"[^A-Za-z0-9._-]", "_", kind.name) + "."
        schema = kind.input_adapter.json_schema(ref_template=_COMPONENT + prefix + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[prefix + name] = definition
        body["properties"]["input"] = schema
    if not _accepts_no_input(kind):
        body["required"] = ["kind", "input"]
    return body


def _accepts_no_input(kind: JobKind) -> bool:
    try:
        kind.validate_input(None)
    except Exception:  # InvalidInput, or a validator of the kind's own that fails on None
        return False
    return True
