"""Standard Webhooks v1 signatures: ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``{webhook-id}.{webhook-timestamp}.{body}``, with ``whsec_`` secrets.

The signer and the receiver's ``verify`` share this module; the tests check both against the
``standardwebhooks`` reference library and the ``openai`` SDK's ``webhooks.unwrap``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Random bytes per new secret: within the 24 to 64 the specification asks for."""
TOLERANCE_SECONDS = 300
"""How far a ``webhook-timestamp`` may be from the receiver's clock, either way (five minutes,
as the reference libraries)."""


class WebhookVerificationError(ValueError):
    """A webhook request that must not be trusted: a header is missing or malformed, its
    timestamp is too old or too new, or no signature matches."""


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}`` with ``secret``."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(
    secrets_: str | Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt. Several secrets (a rotation:
    the new one and the old one) give several signatures, any of which verifies."""
    if "." in msg_id:
        raise ValueError("a webhook id may not contain '.'")
    keys = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(key, msg_id, ts, body) for key in keys),
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a webhook request as a receiver must, and return its JSON payload.

    ``body`` is the raw request body, exactly as received (parse it only after this); headers
    are matched without regard to case; ``secret`` may be a list during a rotation. Raises
    ``WebhookVerificationError``.

    >>> from longjobs.webhooks import verify
    >>> event = verify(request_body, request.headers, "whsec_...")  # doctest: +SKIP
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    clock = time.time() if now is None else now
    if timestamp < clock - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > clock + tolerance:
        raise WebhookVerificationError("webhook-timestamp is in the future")
    given = [part.partition(",") for part in signatures.split()]
    offered = [value.encode() for version, _, value in given if version == "v1"]
    keys = [secret] if isinstance(secret, str) else list(secret)
    for key in keys:
        expected = signature(key, msg_id, timestamp, raw).partition(",")[2].encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            try:
                return json.loads(raw)
            except ValueError:
                raise WebhookVerificationError("the body is not JSON") from None
    raise WebhookVerificationError("no signature matches")
