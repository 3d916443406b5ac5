"""Suite-wide rules, and the throwaway PostgreSQL server that backend tests run against."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.pg_server import PostgresServer, find_bindir

REQUIRE_BACKENDS = os.environ.get("LONGJOBS_REQUIRE_BACKENDS") == "1"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With LONGJOBS_REQUIRE_BACKENDS=1 (set by .ci/run), a skipped test fails the run: a
    backend server that could not be started must not turn into a green build that tested less.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if REQUIRE_BACKENDS and skipped:
        if reporter is not None:
            reporter.write_line(
                f"LONGJOBS_REQUIRE_BACKENDS=1: {len(skipped)} skipped test(s) count as failures",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def backend_unavailable(reason: str) -> NoReturn:
    """Skip a test whose backend server this machine lacks; fail it under
    LONGJOBS_REQUIRE_BACKENDS=1, with the same reason."""
    if REQUIRE_BACKENDS:
        pytest.fail(f"{reason} (LONGJOBS_REQUIRE_BACKENDS=1)", pytrace=False)
    pytest.skip(reason)


def postgres_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        backend_unavailable(
            "PostgreSQL is not available: no initdb and postgres on PATH or in "
            "/usr/lib/postgresql/*/bin (`make services` installs Debian's as root; "
            "otherwise `sudo apt-get install postgresql`)"
        )
    return bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server, started on first use (~0.5 s) and shared by every test.
    Tests take a database of their own from it (`postgres_dsn`) and never stop it."""
    with PostgresServer(postgres_bindir()) as server:
        yield server


@pytest.fixture
def private_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for one test alone, which may stop, crash and restart it."""
    with PostgresServer(postgres_bindir()) as server:
        yield server


@pytest.fixture
async def postgres_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The URL of a new, empty database on the shared server, dropped after the test:
    ``postgresql://postgres@127.0.0.1:PORT/t_<random>``."""
    name = await postgres_server.create_database()
    try:
        yield postgres_server.dsn(name)
    finally:
        await postgres_server.drop_database(name)
