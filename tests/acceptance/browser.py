"""A real headless Chromium for the dashboard's end-to-end tests, driven by Playwright.

The browser is Debian's ``chromium`` (``make test`` installs it as root when it is missing);
Playwright's own browser downloads are never used. Screenshots go to ``test-artifacts/dashboard``
in the project root, where CI keeps them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import backend_unavailable

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"

FLAGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
"""Chromium's own background connections are refused by machines without internet access;
these keep it from trying."""


def chromium_path() -> str | None:
    """``LONGJOBS_CHROMIUM``, else the first of Debian's and other usual names on PATH."""
    explicit = os.environ.get("LONGJOBS_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module; every test opens its own context (cookies and storage)."""
    executable = chromium_path()
    if executable is None:
        backend_unavailable(
            "Chromium is not available (`make services` installs Debian's chromium as root; "
            "otherwise `sudo apt-get install chromium`, or set LONGJOBS_CHROMIUM)"
        )
    # Chromium's sandbox needs user namespaces that a root account in a container lacks.
    flags = [*FLAGS, "--no-sandbox"] if os.geteuid() == 0 else FLAGS
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=flags)
        try:
            yield launched
        finally:
            launched.close()


def artifact(name: str) -> Path:
    """Where the screenshot ``name`` is saved (the folder is made on first use)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
