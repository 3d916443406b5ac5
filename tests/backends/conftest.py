"""One contract suite, every backend: the ``backend`` fixture is opened fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from longjobs.backends.base import Backend
from longjobs.backends.memory import MemoryBackend
from longjobs.backends.sqlite import SQLiteBackend
from longjobs.settings import Settings
from tests.backends.contract import sqlite_url


@pytest.fixture(params=["memory", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    store: Backend
    if request.param == "memory":
        store = MemoryBackend("memory://", Settings())
    else:
        store = SQLiteBackend(sqlite_url(tmp_path / "jobs.db"), Settings(poll_interval=0.01))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def backend_name(backend: Backend) -> str:
    """``memory`` or ``sqlite``: lets a test mark a bug that only one backend has."""
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
