"""The web page in a real headless Chromium (Debian's ``chromium``, installed by scripts/setup.sh), driven by
Playwright, against a real ``thinkbox serve`` on a loopback port with the scripted model of the service
tests. One server and one browser serve the whole test session; each test gets a fresh browser context
(its own storage: signed out), so tests do not see each other's keys or conversations.

Without the browser the tests fail saying how to install it, unless THINKBOX_TEST_ALLOW_NO_BROWSER=1 lets
them skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from service.service_support import Account, QuestionModel, ThreadServer, make_account, service_settings

from thinkbox.service.db import Database

CHROMIUM = os.environ.get("THINKBOX_TEST_CHROMIUM", "/usr/bin/chromium")
MAX_UPLOAD_MIB = 1
expect.set_options(timeout=15_000)


@dataclass
class Web:
    server: ThreadServer
    db: Database
    data_dir: Path
    alice: Account
    bob: Account
    carol: Account

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A server over SQLite; tenant acme with alice and bob, tenant globex with carol."""
    data_dir = tmp_path_factory.mktemp("web")
    settings = service_settings(
        data_dir, None, runs_per_user=6, session_idle_s=600, max_upload_mib=MAX_UPLOAD_MIB
    )
    server = ThreadServer(settings, QuestionModel()).start()
    db = server.service.db
    try:
        yield Web(
            server,
            db,
            data_dir,
            make_account(db, "acme", "alice"),
            make_account(db, "acme", "bob"),
            make_account(db, "globex", "carol"),
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
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


@dataclass
class Watch:
    """What the page did that it must not: dialogs (an injected alert()), uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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


def sign_in(page: Page, url: str, who: Account) -> None:
    page.goto(url + "/")
    page.get_by_test_id("api-key-input").fill(who.key)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("who")).to_have_text(f"{who.user} · {who.tenant}")


def ask(page: Page, question: str) -> Any:
    """Type the question and press Enter; the locator of the new run."""
    runs = page.get_by_test_id("run")
    before = runs.count()
    page.get_by_test_id("question-input").fill(question)
    page.get_by_test_id("question-input").press("Enter")
    expect(runs).to_have_count(before + 1)
    return runs.nth(before)
