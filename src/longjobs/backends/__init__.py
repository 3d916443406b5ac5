"""Backends by URL: ``sqlite:///path.db`` (default), ``postgresql://...``, ``memory://``;
drivers import lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from longjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from longjobs.backends.base import Backend
    from longjobs.settings import Settings


def open_backend(url: str, settings: Settings) -> Backend:
    """A backend for ``url`` (not yet opened). Raises ConfigurationError for unknown schemes."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from longjobs.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url, settings)
    if scheme in ("postgresql", "postgres"):
        from longjobs.backends.postgres import PostgresBackend

        return PostgresBackend(url, settings)
    if scheme == "memory":
        from longjobs.backends.memory import MemoryBackend

        return MemoryBackend(url, settings)
    raise ConfigurationError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db, "
        "postgresql://user@host/dbname or memory://"
    )


def schema_version(url: str) -> int:
    """The schema version this longjobs writes for the kind of store ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        from longjobs.backends.postgres import SCHEMA_VERSION as POSTGRES_VERSION

        return POSTGRES_VERSION
    if scheme == "sqlite":
        from longjobs.backends.sqlite import SCHEMA_VERSION as SQLITE_VERSION

        return SQLITE_VERSION
    return 0  # memory:// keeps no schema
