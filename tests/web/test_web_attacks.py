"""The page's renderers against known cross-site-scripting payloads, with the page's own policy switched off.

The Content-Security-Policy already refuses inline handlers and ``javascript:`` URLs, so a check that only
waits for an injected handler to run cannot see a renderer that lets one through: these tests open the
page with the policy bypassed (``bypass_csp``), where such a handler would run, and also walk the DOM the
renderers built: every element and attribute must be one they are meant to make. The payloads are what
hostile sandbox code or a prompt-injected model would write: HTML outputs of ``display()``, answers in
markdown, outputs, file names and event fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from service.service_support import program

from .web_support import Web, ask, sign_in

PAYLOADS = [
    "<img src=x onerror=window.ran=1>",
    "<svg><script>window.ran=2</script></svg>",
    "<svg onload=window.ran=3>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.ran=4></style></mglyph></table></mtext>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=window.ran=5>",
    '<noscript><p title="</noscript><img src=x onerror=window.ran=6>">',
    "<template><img src=x onerror=window.ran=7></template><div><template><script>window.ran=7</script>",
    '<iframe srcdoc="<script>parent.ran=8</script>"></iframe><object data=javascript:window.ran=8>',
    "<a href=\"jav&#x09;ascript:window.ran=9\">x</a><a href=' javascript:window.ran=9'>y</a>",
    "<details open ontoggle=window.ran=10><summary>s</summary></details>",
    "<input autofocus onfocus=window.ran=11><select autofocus onfocus=window.ran=11>",
    "<video><source onerror=window.ran=12></video><audio src=x onerror=window.ran=12>",
    "<body onload=window.ran=13><base href=//evil.example/><meta http-equiv=refresh content='0;url=//e'>",
    '<table background=javascript:window.ran=14><td style="background:url(javascript:1)">c</td></table>',
    "<img id=api-key name=signin-form src=x><form id=question><input name=value></form>",
    "<div id=conversation><span id=app>clobbered</span></div><a id=KEY href=x>",
    '<th colspan="2 onclick=window.ran=15" rowspan=1 scope=row align="left" class=x style=color:red>h</th>',
    "<xmp><img src=x onerror=window.ran=16></xmp><plaintext><img src=x onerror=window.ran=16>",
    "<!--><img src=x onerror=window.ran=17>--><![CDATA[<img src=x onerror=window.ran=17>]]>",
    "<svg><foreignObject><img src=x onerror=window.ran=18></foreignObject></svg>",
    "<style>@import 'https://evil.example/x.css';</style><link rel=stylesheet href=//evil.example/x.css>",
    "[a](javascript:window.ran=19) [b](JaVaScRiPt:window.ran=19) [c](data:text/html,<script>x</script>)",
    '[d](https://ok.example/"onmouseover=window.ran=20) <https://e.example/x"onclick=window.ran=20>',
    "![img](https://evil.example/track.png) ![x](javascript:window.ran=21)",
    "```python\n</code><img src=x onerror=window.ran=22>\n```\n",
    "| <b onclick=window.ran=22>t</b> | c |\n|---|---|",
]

CHECK = """async ([module, fn, payloads]) => {
    const { [fn]: render } = await import(`/web/js/${module}.js`);
    window.ran = 0;
    window.alert = () => { window.ran = -1; };
    const box = document.createElement("div");
    document.body.append(box);
    for (const p of payloads) box.append(render(p));
    await new Promise((r) => setTimeout(r, 300));
    return { ran: window.ran, found: walk(box) };

    function walk(root) {
        const found = [];
        for (const el of root.querySelectorAll("*")) {
            const attrs = [...el.attributes].map((a) => [a.name, a.value]);
            found.push([el.tagName.toLowerCase(), attrs]);
        }
        return found;
    }
}"""

SANITIZED_TAGS = {
    *("div", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col", "span"),
    *("p", "br", "b", "i", "strong", "em", "code", "pre", "ul", "ol", "li", "sub", "sup", "small", "hr"),
    *("h1", "h2", "h3", "h4", "h5", "h6"),
}
MARKDOWN_TAGS = {
    *("p", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre", "span", "a", "ul", "ol", "li"),
    *("blockquote", "br", "div", "table", "thead", "tbody", "tr", "th", "td"),
}


@pytest.fixture
def open_page(browser: Browser, web: Web) -> Iterator[Page]:
    """The page with its Content-Security-Policy bypassed: what gets through would run."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.goto(web.url + "/")
    probe = page.evaluate(
        """async () => { window.ran = 0; const d = document.createElement("div");
            d.innerHTML = "<img src=x onerror=window.ran=99>"; document.body.append(d);
            await new Promise((r) => setTimeout(r, 300)); d.remove(); return window.ran; }"""
    )
    assert probe == 99, "the policy is not bypassed: these tests could not see a payload run"
    try:
        yield page
    finally:
        context.close()


def run_all(page: Page, module: str, fn: str) -> Any:
    out = page.evaluate(CHECK, [module, fn, PAYLOADS])
    assert out["ran"] == 0, f"a payload ran in {module}.{fn}: window.ran = {out['ran']}"
    return out["found"]


def test_the_html_sanitizer_keeps_only_its_tags_and_harmless_attributes(open_page: Page) -> None:
    for tag, attrs in run_all(open_page, "sanitize", "sanitizedHtml"):
        assert tag in SANITIZED_TAGS, tag
        for name, value in attrs:
            allowed = (tag, name) == ("div", "class") and value == "html-output"
            allowed = allowed or (name in ("colspan", "rowspan", "align", "scope") and value.isalnum())
            assert allowed, (tag, name, value)


def test_markdown_makes_only_its_tags_and_http_links(open_page: Page) -> None:
    for tag, attrs in run_all(open_page, "markdown", "renderMarkdown"):
        assert tag in MARKDOWN_TAGS, tag
        for name, value in attrs:
            if tag == "a" and name == "href":
                assert value.startswith(("https://", "http://")), value  # a '"' in it is a character
            else:
                assert (tag, name) in {("a", "rel"), ("a", "target"), ("th", "scope"), ("code", "class")} or (
                    tag in ("span", "div") and name == "class"
                ), (tag, name, value)


def test_every_field_of_a_run_stays_text(open_page: Page) -> None:
    """A run whose question, thoughts, code, outputs, displays, errors, notes and answer are all payloads."""
    out = open_page.evaluate(
        """async (payloads) => {
            const { RunView } = await import("/web/js/run_view.js");
            window.ran = 0;
            window.alert = () => { window.ran = -1; };
            const view = new RunView("r_0000000000000001", payloads[0]);
            document.body.append(view.el);
            const all = payloads.join("\\n");
            const b64 = btoa("<svg xmlns='http://www.w3.org/2000/svg' onload='window.ran=30'/>");
            const events = [
                ["run_started", { question: all }],
                ["step_started", { step: 1, ts: 1 }],
                ["thought_delta", { step: 1, text: all }],
                ["action_parsed", { step: 1, thought: all, action: "execute_code", code: all }],
                ["code_started", { step: 1, code: all }],
                ["output_chunk", { step: 1, name: "stdout", text: all }],
                ["output_chunk", { step: 1, name: "stderr", text: all }],
                ["display_produced", { step: 1, mime: { "text/html": all } }],
                ["display_produced", { step: 1, mime: { "image/svg+xml": `${all}<svg onload=ran=31>` } }],
                ["display_produced", { step: 1, mime: { "image/png": `x" onerror="window.ran=32` } }],
                ["display_produced", { step: 1, mime: { "image/png": b64 } }],
                ["display_produced", { step: 1, mime: { "text/plain": all } }],
                ["execution_finished", { step: 1, result: { result: all, duration_ms: 1,
                    error: { type: all, message: all, traceback: all } } }],
                ["code_rejected", { step: 1, code: all, problems: [all] }],
                ["notice", { step: 1, kind: "docs", message: all }],
                ["notice", { step: 1, kind: "other", message: all }],
                ["files_previewed", { files: [all], text: all }],
                ["route_chosen", { route: all, reason: all }],
                ["network_request", { step: 1, method: all, host: all, port: 1, path: all, refused: true,
                    reason: all, secrets: [all] }],
                ["tools_harvested", { tools: [{ function: all, outcome: all, reason: all }], duration_s: 1 }],
                ["final_answer", { answer: all }],
                ["run_error", { code: all, message: all }],
                ["run_finished", { status: all, steps: 1, duration_s: 1, tokens: 1 }],
            ];
            events.forEach(([type, data], i) => view.add({ id: i + 1, type, data }));
            await new Promise((r) => setTimeout(r, 300));
            const found = [];
            for (const el of view.el.querySelectorAll("*")) {
                found.push([el.tagName.toLowerCase(), [...el.attributes].map((a) => [a.name, a.value])]);
            }
            return { ran: window.ran, found };
        }""",
        PAYLOADS,
    )
    assert out["ran"] == 0, out["ran"]
    for tag, attrs in out["found"]:
        assert tag not in (
            "script",
            "iframe",
            "object",
            "embed",
            "svg",
            "math",
            "form",
            "input",
            "base",
            "meta",
        )
        for name, value in attrs:
            assert not name.startswith("on") and name not in ("id", "name", "style", "srcdoc", "background")
            if name == "href":
                assert value.startswith(("https://", "http://")), value
            if name == "src":
                assert tag == "img" and value.startswith(
                    ("data:image/png;base64,", "data:image/svg+xml;base64,")
                )


def test_the_page_refuses_html_strings_outside_its_sanitizer(web: Web, page: Page) -> None:
    """Trusted Types: code that writes a string as HTML throws (a future mistake fails instead of
    becoming a hole); the sanitizer's policy is the page's only one, and no script can make another."""
    page.goto(web.url + "/")
    page.get_by_test_id("api-key-input").wait_for()  # app.js ran
    out = page.evaluate(
        """async () => {
            const tries = {
                innerHTML: () => { document.createElement("div").innerHTML = "<b>x</b>"; },
                insertAdjacentHTML: () => document.body.insertAdjacentHTML("beforeend", "<b>x</b>"),
                DOMParser: () => new DOMParser().parseFromString("<b>x</b>", "text/html"),
                policy: () => trustedTypes.createPolicy("thinkbox-html", { createHTML: (s) => s }),
                another: () => trustedTypes.createPolicy("mine", { createHTML: (s) => s }),
            };
            const out = {};
            for (const [name, attempt] of Object.entries(tries)) {
                try { attempt(); out[name] = "allowed"; } catch (err) { out[name] = err.name; }
            }
            const { sanitizedHtml } = await import("/web/js/sanitize.js");
            out.sanitized = sanitizedHtml("<table><tr><td>1</td></tr></table>").innerHTML;
            return out;
        }"""
    )
    assert out["sanitized"] == "<table><tbody><tr><td>1</td></tr></tbody></table>"
    refused = {name: why for name, why in out.items() if name != "sanitized"}
    assert refused == dict.fromkeys(
        ("innerHTML", "insertAdjacentHTML", "DOMParser", "policy", "another"), "TypeError"
    )


BIDI = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "invoice\u202efdp.exe" reads as "invoiceexe.pdf"


def test_a_shared_file_cannot_disguise_its_name_with_bidi_controls(web: Web, page: Page) -> None:
    """A tenant mate's file named to read as a PDF while it ends in .exe shows its controls, and downloads
    under a name without them."""
    name = f"invoice{BIDI}fdp.exe"
    with web.client(web.bob) as bob:
        assert bob.put("/v1/files/" + name, params={"scope": "tenant"}, content=b"MZ").status_code == 201
    try:
        sign_in(page, web.url, web.alice)
        row = page.get_by_test_id("shared-file-list").locator('[data-testid="file"]', has_text="invoice")
        expect(row).to_have_count(1)
        shown = row.locator(".name").inner_text()
        assert BIDI not in shown and "U+202E" in shown and shown.endswith("fdp.exe"), shown
        with page.expect_download() as download:
            row.get_by_role("button", name="Download").click()
        saved = download.value.suggested_filename
        assert saved.endswith(".exe") and not any(0x202A <= ord(c) <= 0x202E for c in saved), saved
    finally:
        with web.client(web.bob) as bob:
            bob.delete("/v1/files/" + name, params={"scope": "tenant"})


def test_an_answer_nested_thousands_deep_is_shown_and_breaks_nothing(web: Web, page: Page) -> None:
    """An answer of thousands of '>' (block quotes in block quotes) once overflowed the renderer's stack:
    the answer vanished and the page said the server could not be reached."""
    sign_in(page, web.url, web.alice)
    run = ask(page, program([], "> " * 3000 + "deep"))
    expect(run.get_by_test_id("run-status")).to_have_attribute("data-status", "answered")
    expect(run.get_by_test_id("answer")).to_contain_text("deep")
    assert run.get_by_test_id("answer").locator("blockquote").count() <= 16
    assert page.get_by_test_id("connection-banner").is_hidden()


def test_an_event_the_page_cannot_show_is_said_and_the_run_goes_on(web: Web, page: Page) -> None:
    """A renderer that throws on one event (a bug, or content no test foresaw) costs that event only: it is
    not taken for a lost connection (a false banner, and the event skipped at the reconnection)."""
    sign_in(page, web.url, web.alice)
    page.evaluate(
        """async () => {
            const { RunView } = await import("/web/js/run_view.js");
            RunView.prototype.on_display_produced = () => { throw new Error("no way to show this"); };
        }"""
    )
    code = "class T:\n    def _repr_html_(self):\n        return '<b>t</b>'\ndisplay(T())\nprint('after')"
    run = ask(page, program([code], "shown"))
    expect(run.get_by_test_id("answer")).to_have_text("shown")
    expect(run.get_by_test_id("step-output")).to_have_text("after\n")
    expect(run.get_by_test_id("run-note")).to_contain_text("display_produced")
    expect(run.get_by_test_id("run-note")).to_contain_text("no way to show this")
    assert page.get_by_test_id("connection-banner").is_hidden()


def test_an_html_output_too_large_to_parse_is_shown_as_its_text(web: Web, page: Page) -> None:
    """Chromium parses thousands of unclosed tags in quadratic time (a 16 MiB display, what a session may
    send, would hold the tab for hours, at every reload): past 20,000 tags the text form is shown."""
    page.goto(web.url + "/")
    out = page.evaluate(
        """async () => {
            const { RunView } = await import("/web/js/run_view.js");
            const view = new RunView("r_0000000000000001", "q");
            document.body.append(view.el);
            const frame = (id, html) => ({ id, type: "display_produced", data: { step: 1, mime: {
                "text/html": html, "text/plain": `text form ${id}` } } });
            view.add(frame(1, "<div>".repeat(20001)));
            view.add(frame(2, "<table>" + "<tr><td>1</td></tr>".repeat(1000) + "</table>"));
            const shown = [...view.el.querySelectorAll('[data-testid="output-display"]')];
            return shown.map((d) => [d.firstElementChild.className, d.textContent.slice(0, 20)]);
        }"""
    )
    assert out == [["output", "text form 1"], ["html-output", "1" * 20]], out


def test_a_native_submission_of_the_sign_in_form_never_puts_the_key_in_a_url(web: Web, page: Page) -> None:
    """Should the page's script not handle the form (a failed load, a future bug), the browser's own
    submission would send the key as ``/?api-key=KEY``: into the history, logs and the next Referer."""
    page.goto(web.url + "/")
    page.get_by_test_id("api-key-input").fill(web.alice.key)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.evaluate(
        """() => {
            const form = document.getElementById("signin-form");
            const bare = form.cloneNode(true);  // the same form without the page's listener
            bare.querySelector("input").value = form.querySelector("input").value;
            form.replaceWith(bare);
            bare.requestSubmit();
        }"""
    )
    page.wait_for_timeout(1000)
    assert not [url for url in urls if web.alice.key in url], urls
    assert web.alice.key not in page.url
