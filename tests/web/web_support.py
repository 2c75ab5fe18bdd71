"""What the web page's tests share: the running server's accounts, what the page must not do, signing in
and asking through the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import Page, expect

from service.service_support import Account, Running

MAX_UPLOAD_MIB = 1
expect.set_options(timeout=15_000)


Web = Running
"""The web tests' server: the service tests' :class:`Running`."""


@dataclass
class Watch:
    """What the page did that it must not: dialogs (an injected alert()), uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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
