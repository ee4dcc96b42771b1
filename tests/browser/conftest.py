"""The browser test's fixtures: Debian's Chromium driven by playwright, on the whole suite started by
``tests/conftest.py`` (the web UI told where the gateway is, the gateway allowing the UI's origin).

Chromium comes from the Debian package ``chromium`` (``playwright install`` cannot download browsers
here). Without it the tests FAIL, saying so; they never skip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from coca_platform.devstack import Stack

CHROMIUM = os.environ.get("COCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: install the Debian package "
            "(`apt-get install -y chromium`, which `make bootstrap` does) to run the browser tests",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run `uv sync --all-packages`", pytrace=False)
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any, stack: Stack) -> AsyncIterator[Any]:
    """A fresh browser context (its own sessionStorage) on the web UI. ``page.problems`` collects
    uncaught script errors and console errors (a CSP violation is one); tests assert it stays empty."""
    context = await browser.new_context(base_url=stack.url("web"), viewport={"width": 1200, "height": 820})
    context.set_default_timeout(20_000)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: Any) -> None:
        # an API answering 4xx/5xx is logged by Chromium as "Failed to load resource": pages handle those
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    opened.on("console", on_console)
    opened.problems = problems
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
