"""Webhooks: Standard Webhooks v1 signing, the receiver's ``verify``, and the SSRF guard that
every delivery goes through.

Receivers verify a delivery before trusting it::

    from longjobs.webhooks import WebhookVerificationError, verify

    try:
        event = verify(raw_body, request.headers, "whsec_...")
    except WebhookVerificationError:
        return 400
    if already_seen(request.headers["webhook-id"]):   # at-least-once: dedupe on the id
        return 200
"""

from longjobs.webhooks.signing import (
    TOLERANCE_SECONDS,
    WebhookVerificationError,
    new_secret,
    sign,
    signature,
    verify,
)

__all__ = [
    "TOLERANCE_SECONDS",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "signature",
    "verify",
]
