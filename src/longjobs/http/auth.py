"""Who is calling: the tenant every route scopes its work to.

Open mode: while no API key was ever created, every request belongs to the one tenant
``default``, whatever ``Authorization`` header it carries (and ``longjobs serve`` refuses a non-
loopback address without an explicit insecure flag). Once a key exists, every route but the
probes needs ``Authorization: Bearer <key>``, and the key's tenant is the caller's. Revoking
every key does not reopen the server. Each request with a key checks the store (one indexed
read), so a revocation applies to the next request; in open mode the store is asked at most once
a second whether a first key exists.
"""

from __future__ import annotations

import time

from starlette.requests import HTTPConnection

from longjobs.app import DEFAULT_TENANT
from longjobs.errors import StorageError
from longjobs.http.problems import ProblemError
from longjobs.http.state import state_of
from longjobs.keys import key_hash

_CHALLENGE = 'Bearer realm="longjobs"'


async def tenant_of(connection: HTTPConnection) -> str:
    """The caller's tenant; 401 with ``WWW-Authenticate: Bearer`` when a key is needed and
    missing, malformed, unknown or revoked."""
    state = state_of(connection)
    tenant, token = await _credentials(connection)
    if token is None:
        return tenant
    caller = key_hash(token)
    connection.state.longjobs_key = caller
    if state.rate_limiter is not None:
        state.rate_limiter.take(caller)
    return tenant


REAUTHORIZE_SECONDS = 5.0
"""How often a long-lived request checks that its caller's key still holds."""


class Reauthorization:
    """The credentials of a long-lived request (an event stream, a WebSocket) serving
    ``tenant``, checked again before it sends more once ``REAUTHORIZE_SECONDS`` have passed
    since the last check."""

    def __init__(self, connection: HTTPConnection, tenant: str) -> None:
        self._connection = connection
        self._tenant = tenant
        self._checked = time.monotonic()

    async def holds(self) -> bool:
        """False once the key was revoked, once keys are required of a request that came in
        open mode without one, and when the store cannot tell now (the client reconnects and
        is answered properly). Not counted against the caller's rate limit."""
        if time.monotonic() - self._checked < REAUTHORIZE_SECONDS:
            return True
        try:
            tenant, _ = await _credentials(self._connection)
        except (ProblemError, StorageError):
            return False
        self._checked = time.monotonic()
        return tenant == self._tenant


async def _credentials(connection: HTTPConnection) -> tuple[str, str | None]:
    """The tenant, and the key that counts against rate limits (None in open mode without a
    valid key)."""
    app = state_of(connection).app
    header = connection.headers.get("authorization")
    if not await app.keys_required():
        # Open mode: a key that is not valid (SDKs such as OpenAI's always send one) is not an
        # error. A valid one, made by another process within the last second, names its tenant.
        token = _bearer_token(header) if header is not None else None
        tenant = await app.authenticate(token) if token else None
        if token is None or tenant is None:
            return DEFAULT_TENANT, None
        return tenant, token
    if header is None:
        raise _unauthorized("an API key is required: send Authorization: Bearer <key>", None)
    token = _bearer_token(header)
    if token is None:
        raise _unauthorized("the Authorization header must be: Bearer <key>", "invalid_request")
    tenant = await app.authenticate(token)
    if tenant is None:
        raise _unauthorized("the API key is not valid (unknown or revoked)", "invalid_token")
    return tenant, token


def _bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def caller_of(connection: HTTPConnection) -> str:
    """Who counts against per-key limits: the key's digest, or ``open`` in open mode."""
    return str(getattr(connection.state, "longjobs_key", "open"))


def _unauthorized(detail: str, error: str | None) -> ProblemError:
    challenge = _CHALLENGE if error is None else f'{_CHALLENGE}, error="{error}"'
    return ProblemError("unauthorized", detail, headers={"WWW-Authenticate": challenge})
