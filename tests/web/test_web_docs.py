"""The API's interactive docs (``/docs``, ``/redoc``) in a real Chromium: they render the API's operations
with nothing loaded from another host (offline, and no third-party script on the origin that holds the web
page's key), under a Content-Security-Policy that lets only this server's scripts run and that the page
needs to bend (it refuses ReDoc's attempt to show a logo from Redocly's CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from service.service_support import directives

from .web_support import Web

VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_render_from_this_server_only(web: Web, page: Page, path: str) -> None:
    host = urlsplit(web.url).netloc
    made: list[str] = []
    elsewhere: list[str] = []

    def only_here(route: Route) -> None:
        url = route.request.url
        made.append(url)
        if urlsplit(url).netloc == host:
            route.continue_()
        else:  # recorded and refused at once (there is no network here anyway)
            elsewhere.append(url)
            route.abort()

    page.route("**/*", only_here)
    page.add_init_script(VIOLATIONS)
    answer = page.goto(web.url + path)
    assert answer is not None and answer.ok, answer
    assert not elsewhere, f"{path} loaded from other hosts: {elsewhere}"
    policy = directives(answer.headers["content-security-policy"])
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'", policy
    assert policy["script-src"].split()[0] == "'self'" and "unsafe" not in policy["script-src"], policy
    assert policy["connect-src"] == "'self'", policy
    if path == "/docs":
        expect(page.locator(".opblock")).not_to_have_count(0)
        expect(page.locator('.opblock-summary-path[data-path="/v1/runs"]').first).to_be_visible()
        me = page.locator('.opblock-summary-path[data-path="/v1/me"]').first
        me.click()  # and try it: the policy lets Swagger UI call the API (no key here: 401)
        page.get_by_role("button", name="Try it out", exact=True).click()
        page.get_by_role("button", name="Execute", exact=True).click()
        status = page.locator(".live-responses-table td.response-col_status")
        expect(status.filter(has_text="401")).to_have_count(1)
    else:
        expect(page.locator("h2", has_text="Create Run").first).to_be_visible()
    assert made and all(urlsplit(url).netloc == host for url in made), made
    assert web.url + "/openapi.json" in made  # the UI read the API's description from this server
    assert not elsewhere, f"{path} loaded from other hosts: {elsewhere}"
    refused = page.evaluate("window.__violations")
    if path == "/redoc":  # ReDoc's attribution logo, from Redocly's CDN: the policy keeps it from loading
        refused = [v for v in refused if v != "img-src https://cdn.redoc.ly/redoc/logo-mini.svg"]
    assert refused == []  # the policy refused nothing else: nothing the docs needed
