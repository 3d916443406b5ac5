"""API keys: made here, shown once, stored only as a SHA-256 of the secret.

A key is ``lj_`` and 43 URL-safe characters (256 random bits): too strong to guess, so a plain
SHA-256 (not a slow password hash) is the right digest, and lookups by digest are one index read.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from longjobs.backends.base import ApiKey

PREFIX = "lj_"


def new_api_key(tenant: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key record for ``tenant`` and its secret (to show once, never to store)."""
    if not tenant or len(tenant) > 200:
        raise ValueError("a tenant is a non-empty name of at most 200 characters")
    record = ApiKey(
        id="key_" + secrets.token_hex(8), tenant=tenant, name=name, created_at=time.time()
    )
    return record, PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: str) -> str:
    """The digest a key is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()
