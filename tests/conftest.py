"""Suite-wide rules."""

from __future__ import annotations

import os

import pytest

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
