"""Fixtures of the acceptance tests: real ``longjobs`` processes on a temporary SQLite file.

A failed test's report ends with the stderr of every process it started.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Cluster

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


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Processes started by one test; all are SIGKILLed (whole groups) at teardown."""
    processes = Cluster(tmp_path)
    report_on_failure(request, processes)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def shared_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One ``longjobs serve`` (API and in-process worker) for the tests of a module, with the
    module's ``SERVE_ENV`` settings if it has any."""
    processes = Cluster(tmp_path_factory.mktemp("serve"))
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
