"""Headless Chromium (Debian's package, installed by the test run if missing) driven by Playwright, against
pytest-django's live server on 127.0.0.1. Screenshots go to $GATEWAY_ARTIFACTS_DIR (default
.state/artifacts/checkout)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodes.apt import ensure_installed, executable

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return ensure_installed(["chromium"], executable("/usr/bin/chromium", "chromium"))


@pytest.fixture(scope="session")
def zbarimg() -> Path:
    return ensure_installed(["zbar-tools"], executable("zbarimg"))


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django then refuses ORM calls from it
    # unless told that this synchronous use is deliberate (the documented switch for such tests).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> Path:
    root = Path(
        os.environ.get("GATEWAY_ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / ".state" / "artifacts")
    )
    path = root / "checkout"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(autouse=True)
def return_urls_to_the_live_server(settings):
    """The shop pages these tests return to are on the live server, plain http on 127.0.0.1 (the demo's
    setting; production takes https only)."""
    settings.GATEWAY_RETURN_URL_ALLOW_HTTP = True
