"""The server going away mid-run: the page says so, keeps retrying, and when the server is back (the run
resumed from its journal) it goes on from the last event it showed, with nothing shown twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from service.service_support import QuestionModel, ThreadServer, make_account, program, service_settings

from .web_support import ask, sign_in


class Restartable:
    """A server that stops as a crash would (runs left unfinished) and starts again on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = service_settings(data_dir, None, session_idle_s=600)
        self.server: ThreadServer | None = ThreadServer(self.settings, QuestionModel()).start()
        self.port = self.server.port
        self.url = self.server.url

    def stop(self) -> None:
        if self.server is not None:
            # the open event streams are cut after 0.5 s (uvicorn would wait for them), then the service
            # stops as a crash would: its runs stay unfinished and resume at the next start
            self.server.server.config.timeout_graceful_shutdown = 0.5
            self.server.stop()
            self.server = None

    def start(self) -> None:
        server = ThreadServer(self.settings, QuestionModel())
        server.port, server.url = self.port, self.url
        server.server.config.port = self.port
        self.server = server.start()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


def test_the_page_says_the_server_is_gone_and_resumes_when_it_is_back(
    restartable: Restartable, page: Page
) -> None:
    assert restartable.server is not None
    who = make_account(restartable.server.service.db, "acme", "dora")
    sign_in(page, restartable.url, who)
    steps = ["print('before', flush=True)\nimport time\ntime.sleep(1.5)\nx = 6", "print(x * 7)"]
    run = ask(page, program(steps, "back again"))
    expect(run.get_by_test_id("step-output").first).to_have_text("before\n")
    restartable.stop()
    banner = page.get_by_test_id("connection-banner")
    expect(banner).to_contain_text("cannot be reached")
    restartable.start()
    expect(run.get_by_test_id("answer")).to_have_text("back again", timeout=30_000)
    expect(banner).to_contain_text("again")
    # step 1's code was cut short: it runs again, and the page says why its output shows twice
    expect(run.get_by_test_id("run-note")).to_contain_text(["The code runs again", "The server restarted"])
    expect(run.get_by_test_id("step-output").first).to_have_text("before\nbefore\n")
    expect(run.get_by_test_id("step")).to_have_count(3)
    expect(run.get_by_test_id("step-output").nth(1)).to_have_text("42\n")
    ids = run.evaluate("el => el.querySelectorAll('[data-testid=step]').length")
    assert ids == 3
