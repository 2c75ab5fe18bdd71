"""Asking from the page: the steps appear in order as they happen, figures as images, answers as markdown,
follow-ups in the same session, the session panel, and a wrong key."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from service.service_support import program

from .web_support import Web, ask, sign_in


def test_a_run_shows_thought_code_output_and_answer_in_order(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    question = program(["print(6 * 7)", "x = 41\nx + 1"], "**42** is `6 * 7`")
    run = ask(page, question)
    expect(run.get_by_test_id("answer")).to_be_visible()
    expect(run.get_by_test_id("question")).to_have_text(question)
    steps = run.get_by_test_id("step")
    expect(steps).to_have_count(3)  # two code steps, then the answer's
    first = steps.nth(0)
    expect(first.get_by_test_id("step-thought")).to_have_text("step 1")
    expect(first.get_by_test_id("step-code")).to_contain_text("print(6 * 7)")
    expect(first.get_by_test_id("step-output")).to_have_text("42\n")
    expect(first.get_by_test_id("step-meta")).to_contain_text("tokens")
    expect(steps.nth(1).get_by_test_id("step-output")).to_have_text("42")  # the last expression's value
    answer = run.get_by_test_id("answer")
    expect(answer.locator("strong")).to_have_text("42")
    expect(answer.locator("code")).to_have_text("6 * 7")
    expect(run.get_by_test_id("run-status")).to_contain_text("Answered: 3 steps")
    # in document order: thought, code, output of a step; the steps; then the answer
    order = run.evaluate(
        """el => [...el.querySelectorAll('[data-testid]')].map(e => e.dataset.testid)
              .filter(t => ['step-thought', 'step-code', 'step-output', 'answer'].includes(t))"""
    )
    assert order == ["step-thought", "step-code", "step-output"] * 2 + ["step-thought", "answer"], order
    # the code is highlighted: keywords and numbers in spans
    expect(first.get_by_test_id("step-code").locator(".tok-builtin")).to_have_text("print")


def test_a_figure_appears_as_an_image_and_errors_in_red(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('sales')"
    run = ask(page, program([code, "1 / 0"], "done"))
    expect(run.get_by_test_id("answer")).to_have_text("done")
    image = run.get_by_test_id("output-image")
    expect(image).to_have_count(1)
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert image.evaluate("img => img.complete && img.naturalWidth > 100"), "the figure did not load"
    error = run.get_by_test_id("step-error")
    expect(error).to_contain_text("ZeroDivisionError: division by zero")
    assert error.evaluate("e => getComputedStyle(e).color") != run.get_by_test_id("question").evaluate(
        "e => getComputedStyle(e).color"
    )


def test_a_follow_up_continues_the_session_and_the_panel_shows_its_variables(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    page.get_by_test_id("new-conversation").click()
    first = ask(page, program(["import pandas as pd\ndf = pd.DataFrame({'p': [1.5, 2.5]})\nn = 7"], "made"))
    expect(first.get_by_test_id("answer")).to_have_text("made")
    variables = page.get_by_test_id("variable")
    expect(page.locator('[data-testid="variable"][data-name="n"]')).to_contain_text("int")
    expect(page.locator('[data-testid="variable"][data-name="df"]')).to_contain_text(
        "DataFrame 2 rows x 1 columns: p"
    )
    second = ask(page, program(["print(n * 6)"], "follow-up"))
    expect(second.get_by_test_id("step-output")).to_have_text("42\n")
    expect(variables).to_have_count(3)  # df, n, pd
    page.get_by_test_id("new-conversation").click()
    expect(page.get_by_test_id("run")).to_have_count(0)
    third = ask(page, program(["print(n)"], "fresh"))
    failed = third.locator("[data-testid=step-error], [data-testid=step-rejected]")  # lint check or sandbox
    expect(failed).to_contain_text(re.compile(r"NameError|undefined name 'n'"))


def test_a_wrong_key_gets_a_clear_message(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    page.get_by_test_id("api-key-input").fill("tbk_not-a-real-key")
    page.get_by_test_id("sign-in").click()
    message = page.get_by_test_id("sign-in-error")
    expect(message).to_contain_text("invalid or revoked API key")
    expect(message).not_to_contain_text("Traceback")
    expect(page.get_by_test_id("question-input")).not_to_be_visible()


def test_sign_out_forgets_the_key(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.bob)
    page.reload()
    expect(page.get_by_test_id("who")).to_have_text("bob · acme")  # the key was kept
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("api-key-input")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("api-key-input")).to_be_visible()
    assert page.evaluate("localStorage.getItem('thinkbox.key')") is None
