"""The OpenAPI document of the API: FastAPI's, with problems described as they are sent.

FastAPI puts a response ``model`` under ``application/json`` and documents its own validation
error shape for 422; this API answers every error as ``application/problem+json`` (RFC 9457)
with the ``Problem`` schema, so the document is corrected to say exactly that.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from longjobs.http.problems import PROBLEM_JSON

DESCRIPTION = """\
Durable background jobs for long AI operations: submit a job (`202` with a status URL), follow
its progress by polling, Server-Sent Events or WebSocket, fetch its result, cancel it at any time.

* Authentication: `Authorization: Bearer <key>` (keys from `longjobs keys create`). A server
  with no key yet is open, with the one tenant `default`.
* Errors: every non-2xx answer is `application/problem+json` (RFC 9457) with a stable `type`.
* Sync fast path: `Prefer: wait=N` on `POST /v1/jobs` answers `200` with the finished job when
  it ends within N seconds (capped by the server), else `202`.
* WebSocket: `GET /v1/jobs/{job_id}/ws` (not listed below, OpenAPI cannot describe it) sends the
  same events as the SSE stream as JSON text frames, resumes after `?after=N`, and accepts
  `{"type": "cancel"}` from the client.
"""

_VALIDATION_REFS = {
    "#/components/schemas/HTTPValidationError",
    "#/components/schemas/ValidationError",
}


def install(api: FastAPI) -> None:
    """Make ``api.openapi()`` (served at ``/openapi.json``) return the corrected document."""

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
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _describe_problems(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
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
