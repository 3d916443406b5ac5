"""Standard Webhooks signatures (RELIABILITY S5): our signer checked by independent verifiers —
the ``standardwebhooks`` reference library and the ``openai`` SDK's ``webhooks.unwrap`` — and our
receiver's ``verify`` checked against the reference signer."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import openai
import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from longjobs.webhooks import WebhookVerificationError, new_secret, sign, signature, verify

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specification_example_signs_as_published() -> None:
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    headers = sign(SPEC_SECRET, SPEC_ID, SPEC_BODY, timestamp=SPEC_TS)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert verify(SPEC_BODY, headers, SPEC_SECRET, now=SPEC_TS) == {"test": 2432232314}


@settings(max_examples=1000, deadline=None)
@given(body=st.binary(max_size=512).map(lambda raw: json.dumps(base64.b64encode(raw).decode())))
def test_the_reference_library_verifies_what_we_sign(body: str) -> None:
    secret = new_secret()
    headers = sign(secret, "evt_1", body.encode())

    assert standardwebhooks.Webhook(secret).verify(body.encode(), headers) == json.loads(body)


def test_the_openai_sdk_unwraps_what_we_sign() -> None:
    secret = new_secret()
    body = json.dumps(
        {
            "id": "evt_123",
            "object": "event",
            "type": "response.completed",
            "created_at": int(time.time()),
            "data": {"id": "resp_123"},
        }
    ).encode()
    client = openai.OpenAI(api_key="unused", webhook_secret=secret)

    event = client.webhooks.unwrap(body, sign(secret, "evt_123", body))

    assert event.type == "response.completed"
    assert event.data.id == "resp_123"


def test_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type": "job.completed"}'
    headers = sign([new, old], "evt_2", body)

    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "job.completed"}
        assert verify(body, headers, secret) == {"type": "job.completed"}
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify(body, headers, new_secret())


def test_verify_accepts_the_reference_signer_and_refuses_tampering() -> None:
    secret = new_secret()
    body = b'{"type": "job.failed"}'
    now = int(time.time())
    reference = standardwebhooks.Webhook(secret)
    headers = {
        "webhook-id": "evt_3",
        "webhook-timestamp": str(now),
        "webhook-signature": reference.sign("evt_3", _datetime(now), body.decode()),
    }
    assert verify(body, headers, secret) == {"type": "job.failed"}
    assert verify(body, {k.upper(): v for k, v in headers.items()}, [new_secret(), secret])

    tampered = [
        (b'{"type": "job.completed"}', headers),
        (body, {**headers, "webhook-id": "evt_4"}),
        (body, {**headers, "webhook-timestamp": str(now + 1)}),
        (body, {**headers, "webhook-signature": "v2," + headers["webhook-signature"][3:]}),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        (body, {**headers, "webhook-timestamp": "soon"}),
    ]
    for raw, changed in tampered:
        with pytest.raises(WebhookVerificationError):
            verify(raw, changed, secret)


@pytest.mark.parametrize(
    ("skew", "accepted"), [(-299, True), (299, True), (-301, False), (301, False)]
)
def test_the_timestamp_tolerance_is_five_minutes_either_way(skew: int, accepted: bool) -> None:
    secret = new_secret()
    now = 1_800_000_000
    headers = sign(secret, "evt_5", b"{}", timestamp=now + skew)

    if accepted:
        assert verify(b"{}", headers, secret, now=now) == {}
    else:
        with pytest.raises(WebhookVerificationError, match="timestamp"):
            verify(b"{}", headers, secret, now=now)


def test_secrets_are_unique_whsec_base64_of_24_to_64_bytes() -> None:
    made = {new_secret() for _ in range(100)}
    assert len(made) == 100
    for secret in made:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    with pytest.raises(ValueError, match=r"'\.'"):
        sign(new_secret(), "evt.6", b"{}")


def _datetime(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
