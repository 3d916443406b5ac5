"""API keys and pending counts in every backend: keys stored by hash, revoked at once,
never reopening the server."""

from __future__ import annotations

import pytest

from longjobs.backends.base import Backend
from longjobs.errors import StorageError
from longjobs.keys import key_hash, new_api_key
from tests.backends.contract import make_job


async def test_a_key_authenticates_its_tenant_until_revoked(backend: Backend) -> None:
    record, secret = new_api_key("acme", "ci")
    assert not await backend.has_api_keys()

    await backend.create_api_key(record, key_hash(secret))
    tenant = await backend.authenticate(key_hash(secret))
    revoked = await backend.revoke_api_key(record.id)
    again = await backend.revoke_api_key(record.id)

    assert tenant == "acme"
    assert revoked is True
    assert again is False
    assert await backend.authenticate(key_hash(secret)) is None
    assert await backend.has_api_keys()  # a revoked key still counts: no return to open mode


async def test_unknown_secrets_authenticate_nobody(backend: Backend) -> None:
    record, secret = new_api_key("acme")
    await backend.create_api_key(record, key_hash(secret))

    assert await backend.authenticate(key_hash(secret + "x")) is None
    assert await backend.authenticate("") is None


async def test_keys_are_listed_oldest_first_without_secrets(backend: Backend) -> None:
    first, first_secret = new_api_key("acme", "one")
    second, second_secret = new_api_key("bob")
    await backend.create_api_key(first, key_hash(first_secret))
    await backend.create_api_key(second, key_hash(second_secret))
    await backend.revoke_api_key(second.id)

    listed = await backend.list_api_keys()

    assert [(k.id, k.tenant, k.name) for k in listed] == [
        (first.id, "acme", "one"),
        (second.id, "bob", None),
    ]
    assert listed[0].revoked_at is None
    assert listed[1].revoked_at is not None


async def test_the_same_secret_cannot_be_stored_twice(backend: Backend) -> None:
    record, secret = new_api_key("acme")
    other, _ = new_api_key("bob")
    await backend.create_api_key(record, key_hash(secret))

    with pytest.raises(StorageError):
        await backend.create_api_key(other, key_hash(secret))
    assert await backend.authenticate(key_hash(secret)) == "acme"


async def test_pending_jobs_are_counted_per_tenant_up_to_a_limit(backend: Backend) -> None:
    for _ in range(4):
        await backend.create_job(make_job(tenant="acme"))
    await backend.create_job(make_job(tenant="bob"))

    assert await backend.count_pending("acme", limit=10) == 4
    assert await backend.count_pending("acme", limit=2) == 2
    assert await backend.count_pending("bob", limit=10) == 1
    assert await backend.count_pending("nobody", limit=10) == 0
