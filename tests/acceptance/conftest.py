"""Fixtures of the acceptance tests: real ``longjobs`` processes on a temporary store.

Every test that starts processes runs twice: on a SQLite file and on a PostgreSQL database of
the run's throwaway server (``store`` is ``sqlite`` or ``postgres``), except those marked
``sqlite_only`` (they look inside the SQLite file, or test the HTTP layer alone). A failed
test's report ends with the stderr of every process it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Cluster
from tests.acceptance.receiver import receiver

__all__ = ["receiver"]  # a fixture for every acceptance test module

CLUSTERS = pytest.StashKey[list[Cluster]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for cluster in item.stash.get(CLUSTERS, []):
            report.sections.append(("longjobs processes (stderr)", cluster.report()))
    return report


def report_on_failure(request: pytest.FixtureRequest, cluster: Cluster) -> None:
    """Add the stderr of ``cluster``'s processes to the report of the test, should it fail."""
    request.node.stash.setdefault(CLUSTERS, []).append(cluster)


STORES = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" not in metafunc.fixturenames:
        return
    stores = ["sqlite"] if metafunc.definition.get_closest_marker("sqlite_only") else STORES
    # Module scope: the module's tests run on one store, then on the other, so that a module's
    # shared server (shared_serve, test_tenants' deployment) starts once per store.
    metafunc.parametrize("store", stores, scope="module")


def database_url(request: pytest.FixtureRequest, store: str) -> str | None:
    """A new database for ``store`` (None: the cluster's own SQLite file)."""
    if store == "sqlite":
        return None
    server = request.getfixturevalue("postgres_server")
    # In a thread of its own: the thread of a test that drives a browser runs Playwright's loop.
    with ThreadPoolExecutor(1) as thread:
        return str(server.dsn(thread.submit(asyncio.run, server.create_database()).result()))


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, store: str) -> Iterator[Cluster]:
    """Processes started by one test; all are SIGKILLed (whole groups) at teardown."""
    processes = Cluster(tmp_path, database_url=database_url(request, store))
    report_on_failure(request, processes)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def shared_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, store: str
) -> Iterator[Cluster]:
    """One ``longjobs serve`` (API and in-process worker) for the tests of a module, with the
    module's ``SERVE_ENV`` settings if it has any."""
    url = database_url(request, store)
    processes = Cluster(tmp_path_factory.mktemp("serve"), database_url=url)
    try:
        processes.serve(concurrency=8, env=getattr(request.module, "SERVE_ENV", None))
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
def served(request: pytest.FixtureRequest, shared_serve: Cluster) -> Cluster:
    report_on_failure(request, shared_serve)
    return shared_serve


@pytest.fixture
def api(served: Cluster) -> Iterator[httpx.Client]:
    """An HTTP client of the module's ``longjobs serve``."""
    base_url = served.processes[0].base_url
    assert base_url is not None
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        yield client
