"""Whether a real-browser test can run here: Playwright and Debian's Chromium."""

from __future__ import annotations

import os

import pytest


def require_browser() -> None:
    """Skip a browser test when Playwright or Debian's Chromium is missing (in CI: fail instead)."""
    from app_support import browser

    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the python package playwright is not installed"
    if reason is None and not browser.chromium_available():
        reason = f"no Chromium at {browser.CHROMIUM} (apt-get install chromium)"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
