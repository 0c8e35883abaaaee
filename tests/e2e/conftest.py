"""The browser the e2e tests drive: the OS Chromium through Playwright (no downloads).

Without it (or without the ``playwright`` package) the tests skip, except in CI (CI=true),
where they fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("TOONFORGE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why} (CI=true: the browser tests must run in CI)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Session-scoped, so that it is checked before the (slow) populated store is built."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed: {exc}")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def playwright_api(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw
