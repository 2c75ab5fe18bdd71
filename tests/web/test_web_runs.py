"""Runs on the page: stop, reload mid-run, history (open, search, notebook), users who must not see each
other, and markup in questions, answers and outputs shown as text, never run."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from service.service_support import program

from .web_support import Watch, Web, ask, sign_in


def test_stop_cancels_a_long_run(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    run = ask(page, program(["import time\nprint('working', flush=True)\ntime.sleep(30)"], "never"))
    expect(run.get_by_test_id("step-output")).to_have_text("working\n")
    page.get_by_test_id("stop-button").click()
    expect(run.get_by_test_id("run-status")).to_contain_text("Stopped", timeout=10_000)
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(run.get_by_test_id("answer")).to_have_count(0)
    expect(page.get_by_test_id("ask-button")).to_be_enabled()


def test_a_reload_mid_run_resumes_without_a_duplicated_step(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    page.get_by_test_id("new-conversation").click()
    steps = ["print('one')", "import time\nprint('two', flush=True)\ntime.sleep(2)\nprint('three')"]
    run = ask(page, program(steps, "finished"))
    expect(run.get_by_test_id("step-output").nth(1)).to_contain_text("two")
    page.reload()
    run = page.get_by_test_id("run")
    expect(run).to_have_count(1)
    expect(run.get_by_test_id("answer")).to_have_text("finished")
    expect(run.get_by_test_id("step")).to_have_count(3)
    expect(run.get_by_test_id("step-output").nth(0)).to_have_text("one\n")
    expect(run.get_by_test_id("step-output").nth(1)).to_have_text("two\nthree\n")
    expect(run.get_by_test_id("question")).to_contain_text("finished")


def test_history_opens_a_past_run_searches_and_exports_a_notebook(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.bob)
    marker = "history-marker-7"
    run = ask(page, program([f"print('{marker}')"], "from the past"))
    expect(run.get_by_test_id("answer")).to_have_text("from the past")
    page.get_by_test_id("new-conversation").click()
    ask(page, program(["print(2)"], "later"))
    history = page.get_by_test_id("history-list")
    expect(history.get_by_test_id("history-item")).to_have_count(2)
    expect(history.get_by_test_id("history-item").first).to_contain_text("later")  # newest first
    page.get_by_test_id("history-search").fill(marker)
    expect(history.get_by_test_id("history-item")).to_have_count(1)
    item = history.get_by_test_id("history-item").first
    item.locator("button.open").click()
    opened = page.get_by_test_id("run")
    expect(opened).to_have_count(1)
    expect(opened.get_by_test_id("step-output")).to_have_text(f"{marker}\n")
    expect(opened.get_by_test_id("answer")).to_have_text("from the past")
    with page.expect_download() as download:
        item.get_by_role("button", name="Download as a notebook (.ipynb)").click()
    notebook = json.loads(Path(download.value.path()).read_text())
    assert download.value.suggested_filename.endswith(".ipynb")
    assert any(marker in "".join(c["source"]) for c in notebook["cells"])
    follow_up = ask(page, program(["print('again')"], "continued"))  # the opened run's session goes on
    expect(follow_up.get_by_test_id("answer")).to_have_text("continued")


def test_another_user_sees_none_of_the_first_users_runs_or_files(web: Web, browser: Browser) -> None:
    first = browser.new_context()
    second = browser.new_context()
    try:
        page = first.new_page()
        sign_in(page, web.url, web.alice)
        page.get_by_test_id("file-input").set_input_files(
            files=[{"name": "alice-secret.txt", "mimeType": "text/plain", "buffer": b"mine"}]
        )
        expect(page.get_by_test_id("file-list")).to_contain_text("alice-secret.txt")
        ask(page, program(["print('alice-only')"], "alice's answer"))
        expect(page.get_by_test_id("history-list")).to_contain_text("alice-only")
        # bob signs in on the same page (not reloaded) after alice signed out; carol (another tenant) in
        # another browser
        page.get_by_test_id("sign-out").click()
        page.get_by_test_id("api-key-input").fill(web.bob.key)
        page.get_by_test_id("sign-in").click()
        other = second.new_page()
        sign_in(other, web.url, web.carol)
        for tab, who in ((page, web.bob), (other, web.carol)):
            expect(tab.get_by_test_id("who")).to_have_text(f"{who.user} · {who.tenant}")
            expect(tab.get_by_test_id("history-list")).not_to_contain_text("alice-only")
            expect(tab.get_by_test_id("file-list")).not_to_contain_text("alice-secret.txt")
            expect(tab.get_by_test_id("run")).to_have_count(0)
            tab.get_by_test_id("file-input").set_input_files(
                files=[{"name": f"{who.user}-upload.txt", "mimeType": "text/plain", "buffer": b"x"}]
            )
            expect(tab.get_by_test_id("file-list")).to_contain_text(f"{who.user}-upload.txt")
        # each upload went to its user's folder only, once (alice's page left nothing listening)
        storage = web.data_dir / "storage"
        assert not list(storage.glob("acme/alice/*-upload.txt"))
        assert (storage / "acme" / "bob" / "bob-upload.txt").exists()
        assert (storage / "globex" / "carol" / "carol-upload.txt").exists()
    finally:
        first.close()
        second.close()


def test_markup_in_a_question_an_answer_and_outputs_is_shown_as_text(
    web: Web, page: Page, watch: Watch
) -> None:
    sign_in(page, web.url, web.alice)
    page.evaluate("localStorage.setItem('thinkbox.probe', '0')")
    attack = "<img src=x onerror=\"localStorage.setItem('thinkbox.probe','1')\">"
    script = "<script>localStorage.setItem('thinkbox.probe','2')</script>"
    html = f'<table><tr><td onclick="alert(1)">cell</td></tr></table>{script}{attack}'
    code = (
        f"print({attack!r})\n"
        "class Rich:\n"
        f"    def _repr_html_(self):\n        return {html!r}\n"
        "display(Rich())"
    )
    run = ask(page, program([code], f"{script} and {attack} and [link](javascript:alert(1))"))
    answer = run.get_by_test_id("answer")
    expect(answer).to_contain_text(script)
    expect(answer).to_contain_text(attack)
    expect(run.get_by_test_id("question")).to_contain_text(script)
    expect(run.get_by_test_id("step-output")).to_have_text(attack + "\n")
    display = run.get_by_test_id("output-display")
    expect(display.locator("td")).to_have_text("cell")  # the table is kept, its handler is not
    assert display.locator("td").get_attribute("onclick") is None
    assert run.locator("script, img, a[href^='javascript']").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("localStorage.getItem('thinkbox.probe')") == "0"
    assert not watch.dialogs
