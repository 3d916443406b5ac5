"""Schemathesis hooks of the S4 run (``tests/acceptance/schemathesis.toml`` loads them).

``positive_data_acceptance_per_contract`` stands in for the built-in ``positive_data_acceptance``
(disabled in the config): the same check, except for the answers where API.md overrules it.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.checks import positive_data_acceptance


@schemathesis.check
def positive_data_acceptance_per_contract(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """A request that fits the schema is accepted, unless the contract says otherwise."""
    if contract_rejects(response):
        return None
    return positive_data_acceptance(ctx, response, case)


def contract_rejects(response: Response) -> bool:
    """Whether API.md rejects a request that, taken alone, fits the schema."""
    problem = _problem(response)
    if problem.get("type") == "/problems/payload-too-large":
        # A body over the server's size limit is refused with 413 however well formed it is;
        # no schema can say how many bytes its instances take.
        return True
    if problem.get("type") == "/problems/result-expired":
        # A job submitted with a tiny result_ttl_seconds: its result is gone by the time it is
        # asked for, and the contract answers 410.
        return True
    if problem.get("type") == "/problems/too-many-webhooks":
        # A tenant may register 20 webhook endpoints; the fuzzer registers more.
        return True
    if problem.get("type") == "/problems/idempotency-conflict":
        # The same Idempotency-Key with another body: 422, as the IETF Idempotency-Key draft says.
        return True
    # A cursor is opaque: only one a listing (or the tenant event feed) gave out is valid,
    # which no schema can say. The stateful phase follows real cursors through the listing's
    # next-page link.
    # Likewise a webhook URL must be http(s) and reach only public addresses (SSRF), which
    # the server decides by resolving it.
    errors = problem.get("errors") if problem.get("type") == "/problems/invalid-input" else None
    return bool(errors) and all(
        isinstance(error, dict)
        and (error.get("loc") in _CURSORS or error.get("type") == "unsafe_destination")
        for error in errors or ()
    )


_CURSORS = [["query", "cursor"], ["query", "after"], ["header", "last-event-id"]]


def _problem(response: Response) -> dict[str, Any]:
    if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
