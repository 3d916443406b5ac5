"""One contract suite, every backend: the ``backend`` fixture is opened fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from longjobs.backends.base import Backend
from longjobs.backends.memory import MemoryBackend
from longjobs.backends.postgres import PostgresBackend
from longjobs.backends.sqlite import SQLiteBackend
from longjobs.settings import Settings
from tests.backends.contract import sqlite_url
from tests.pg_server import PostgresServer


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The backend under test, on a store of its own (a PostgreSQL database is dropped after)."""
    store: Backend
    server: PostgresServer | None = None
    if request.param == "memory":
        store = MemoryBackend("memory://", Settings())
    elif request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        database = await server.create_database()
        store = PostgresBackend(server.dsn(database), Settings(poll_interval=0.01))
    else:
        store = SQLiteBackend(sqlite_url(tmp_path / "jobs.db"), Settings(poll_interval=0.01))
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        if server is not None:
            await server.drop_database(database)


@pytest.fixture
def backend_name(backend: Backend) -> str:
    """``memory``, ``sqlite`` or ``postgres``: lets a test mark a bug that one backend has."""
    if isinstance(backend, PostgresBackend):
        return "postgres"
    return "sqlite" if isinstance(backend, SQLiteBackend) else "memory"


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    store = SQLiteBackend(sqlite_url(tmp_path / "jobs.db"), Settings(poll_interval=0.01))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sqlite_peer(sqlite_backend: SQLiteBackend) -> AsyncIterator[SQLiteBackend]:
    """A second backend instance on the same file: stands in for another process."""
    store = SQLiteBackend(sqlite_backend.url, Settings(poll_interval=0.01))
    await store.open()
    try:
        yield store
    finally:
        await store.close()
