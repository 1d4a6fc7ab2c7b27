"""A real headless browser for the workbench tests: Debian's chromium driven by Playwright (never its download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system chromium ($LMSCOPE_CHROMIUM first), or None."""
    given = os.environ.get("LMSCOPE_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def browser(*args: str):
    """A Playwright chromium on the system browser (with extra command-line ``args``), or a clear skip."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium installed (Debian: apt-get install -y chromium; .ci/run installs it): "
                    "the workbench's browser tests need a real browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing (pip install -e .[dev])")
    manager = sync_playwright().start()
    try:
        return manager, manager.chromium.launch(executable_path=executable, args=["--no-sandbox", *args])
    except Exception:
        manager.stop()
        raise


def open_page(chromium, url: str, width: int = 1400, height: int = 900):
    """A new page at ``url`` and the list its script errors are collected into (a test asserts it stays empty)."""
    page = chromium.new_context(viewport={"width": width, "height": height}).new_page()  # a fresh profile
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors
