"""The page with the embedded model, end to end: ``thinkbox serve`` on its defaults, a key from ``thinkbox
admin``, a question typed in Chromium, the answer computed by code and shown. Marked ``model`` (CI runs it
with ``-m model``). It also takes the README's screenshot (THINKBOX_UPDATE_SCREENSHOT=1 writes it to
docs/img/web.png)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from service.service_support import Account, ProcessServer, require_embedded_model

from .web_support import sign_in

pytestmark = pytest.mark.model
THINKBOX = str(Path(sys.executable).with_name("thinkbox"))
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Plot the squares of the integers 1 to 10 as a bar chart, and tell me their sum."


def test_the_embedded_model_answers_a_question_typed_in_the_page(tmp_path: Path, browser: Browser) -> None:
    require_embedded_model()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THINKBOX_MODEL__")}
    env["THINKBOX_CONFIG"] = str(tmp_path / "none.toml")
    admin = [THINKBOX, "admin"]
    for argv in (
        ["tenant", "create", "acme"],
        ["user", "create", "acme", "alice"],
        ["key", "create", "acme", "alice"],
    ):
        done = subprocess.run(
            [*admin, *argv, "--data-dir", str(data_dir)], env=env, check=True, capture_output=True, text=True
        )
    alice = Account("acme", "alice", done.stdout.strip().splitlines()[-1])
    server = ProcessServer(data_dir, env).start(timeout=180)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        sign_in(page, server.url, alice)
        page.get_by_test_id("question-input").fill(QUESTION)
        page.get_by_test_id("ask-button").click()
        run = page.get_by_test_id("run")
        expect(run.get_by_test_id("step-thought").first).not_to_be_empty(timeout=120_000)
        expect(run.get_by_test_id("run-status")).to_contain_text("Answered", timeout=300_000)
        expect(run.get_by_test_id("step-code").first).to_be_visible()  # computed by code
        assert "385" in re.sub(r"[,\s_]", "", run.get_by_test_id("answer").inner_text())
        # tall enough to show the whole run, from the question to the answer
        height = page.evaluate(
            "document.documentElement.clientHeight - conversation.clientHeight + conversation.scrollHeight"
        )
        page.set_viewport_size({"width": 1280, "height": min(1800, height + 16)})
        shot = tmp_path / "web.png"
        page.screenshot(path=str(shot))
        if os.environ.get("THINKBOX_UPDATE_SCREENSHOT") == "1":
            (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, ROOT / "docs" / "img" / "web.png")
    finally:
        context.close()
        server.stop()
