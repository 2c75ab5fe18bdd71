"""What serves the page, and how it reads: its files and their security headers, keyboard-only use,
360 px wide, light and dark by the system setting."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from service.service_support import program

from .web_support import Web


def test_the_page_and_its_files_are_served_with_a_strict_policy(web: Web) -> None:
    page = httpx.get(web.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    script = httpx.get(web.url + "/web/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for bad in ("/web/../api/app.py", "/web/%2e%2e/api/app.py", "/web/nothing.js", "/web/js"):
        answer = httpx.get(web.url + bad)
        assert answer.status_code == 404, (bad, answer.text)
        assert "error" in answer.json()
    assert httpx.get(web.url + "/openapi.json").json()["paths"].get("/") is None  # not part of the API


def test_keyboard_only_at_360_pixels(web: Web, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, color_scheme="dark")
    try:
        page = context.new_page()
        page.goto(web.url + "/")
        expect(page.get_by_test_id("api-key-input")).to_be_focused()
        page.keyboard.type(web.carol.key)
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("who")).to_have_text("carol · globex")
        expect(page.get_by_test_id("question-input")).to_be_focused()
        page.keyboard.type("first line")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type(program(["print('narrow')"], "fits"))
        assert page.get_by_test_id("question-input").input_value().startswith("first line\n")
        page.keyboard.press("Enter")
        run = page.get_by_test_id("run")
        expect(run.get_by_test_id("answer")).to_have_text("fits")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide at 360 px: it scrolls sideways"
        dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
        for control in page.locator("input, textarea, button, select").all():
            if control.is_visible():
                name = control.evaluate(
                    "e => e.labels?.[0]?.textContent || e.getAttribute('aria-label') || e.textContent"
                )
                assert name.strip(), control.evaluate("e => e.outerHTML")
    finally:
        context.close()
    light = browser.new_context(color_scheme="light")
    try:
        page = light.new_page()
        page.goto(web.url + "/")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != dark
    finally:
        light.close()
