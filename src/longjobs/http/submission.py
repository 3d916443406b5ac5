"""Reading a submission: the body under a size cap, its JSON, its envelope, and ``Prefer``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from longjobs.app import JobKind
from longjobs.errors import InvalidInput
from longjobs.http.problems import ProblemError, field_errors, invalid_input_detail
from longjobs.schemas import SubmitRequest


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ProblemError 413 as soon as it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading anything, else while a chunked body streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ProblemError:
    return ProblemError("payload-too-large", f"the request body is over {limit} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


MAX_JSON_DEPTH = 100
"""How deeply a request body may nest arrays and objects. A job is answered inside its resource
and listings, and pydantic serializes at most 255 levels: a job stored any deeper could be
submitted but never shown again, and would break every listing it appears in."""

_TOO_DEEP = "the body is not acceptable JSON: it is nested too deeply"


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; ProblemError 400 ``malformed-json`` for anything that is not
    strict JSON (NaN and Infinity included) or nests over ``MAX_JSON_DEPTH`` levels, saying
    where it went wrong but not echoing it."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        detail = f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        detail = _TOO_DEEP
    except ValueError as exc:  # bad UTF-8, NaN or Infinity, an integer of too many digits
        detail = f"the body is not valid JSON: {str(exc)[:200]}"
    else:
        if _depth(value) <= MAX_JSON_DEPTH:
            return value
        detail = _TOO_DEEP
    raise ProblemError("malformed-json", detail)


def _depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` nests (a scalar is 0), without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in item)
    return deepest


def parse_submission(value: Any) -> SubmitRequest:
    """The submission envelope; ProblemError 422 listing every field at fault under ``body``."""
    try:
        return SubmitRequest.model_validate(value)
    except ValidationError as exc:
        errors = field_errors(exc.errors(), prefix=("body",))
        raise ProblemError("invalid-input", invalid_input_detail(errors), errors=errors) from None


def check_input(kind: JobKind, raw: Any) -> None:
    """Raise InvalidInput unless ``raw``, an input sent as JSON, fits the kind's JSON Schema as
    ``/v1/kinds`` and the OpenAPI document publish it.

    The App validates inputs the pydantic way, for Python callers too: lax, so ``"5"`` passes
    for an integer and ``true`` for a number. Over HTTP the input is JSON and its schema is the
    contract, so it is validated in pydantic's strict JSON mode first, where a float with no
    fraction is an integer, as in JSON Schema.
    """
    if kind.input_adapter is None:
        kind.validate_input(raw)
        return
    try:
        kind.input_adapter.validate_json(json.dumps(_whole_numbers(raw)), strict=True)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise InvalidInput(kind.name, errors) from None


def _whole_numbers(value: Any) -> Any:
    # Strict mode takes an int for a float but no float for an int: floats with no fraction
    # become ints. Recursion is safe: parse_json refused anything nested over MAX_JSON_DEPTH.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Preferences:
    """What an RFC 7240 ``Prefer`` header asks of a submission: ``wait=N`` and ``respond-async``.

    Preferences the server does not understand, or with a malformed value, are ignored, as the
    RFC requires.

    >>> Preferences.parse(["respond-async, wait=10"])
    Preferences(wait=10, respond_async=True)
    """

    wait: int | None = None
    respond_async: bool = False

    @classmethod
    def parse(cls, headers: list[str]) -> Preferences:
        """The preferences of all ``Prefer`` header lines; the first ``wait`` wins."""
        wait: int | None = None
        respond_async = False
        for line in headers:
            for item in line.split(","):
                token, _, value = item.split(";")[0].partition("=")
                token, value = token.strip().lower(), value.strip().strip('"')
                if token == "respond-async":
                    respond_async = True
                elif token == "wait" and wait is None and value.isdigit() and len(value) <= 9:
                    wait = int(value)
        return cls(wait=wait, respond_async=respond_async)
