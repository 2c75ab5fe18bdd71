"""The web page in a real headless Chromium (Debian's ``chromium``, installed by scripts/setup.sh), driven by
Playwright, against a real ``thinkbox serve`` on a loopback port with the scripted model of the service
tests. One server and one browser serve all the tests of this folder; each test gets a fresh browser
context (its own storage: signed out), so tests do not see each other's keys or conversations. They are
package-scoped, not session-scoped: Playwright's sync API keeps an event loop running in the main thread
while it is started, which would break every asyncio test that runs after these.

Without the browser the tests fail saying how to install it, unless THINKBOX_TEST_ALLOW_NO_BROWSER=1 lets
them skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from service.service_support import running_server

from .web_support import MAX_UPLOAD_MIB, Watch, Web

CHROMIUM = os.environ.get("THINKBOX_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="package")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A server over SQLite; tenant acme with alice and bob, tenant globex with carol."""
    data_dir = tmp_path_factory.mktemp("web")
    with running_server(
        data_dir, None, runs_per_user=6, session_idle_s=600, max_upload_mib=MAX_UPLOAD_MIB
    ) as running:
        yield running


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"no Chromium at {CHROMIUM}: install Debian's chromium (scripts/setup.sh does)"
        if os.environ.get("THINKBOX_TEST_ALLOW_NO_BROWSER") == "1":
            pytest.skip(message)
        pytest.fail(f"{message}\n(set THINKBOX_TEST_ALLOW_NO_BROWSER=1 to skip these tests)", pytrace=False)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def page(context: BrowserContext, watch: Watch) -> Iterator[Page]:
    page = context.new_page()
    page.on("dialog", lambda d: (watch.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    yield page
    assert not watch.dialogs, f"the page opened dialogs: {watch.dialogs}"
    assert not watch.errors, f"the page had uncaught errors: {watch.errors}"
