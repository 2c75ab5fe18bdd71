"""The page's renderers, run in the browser on their own: markdown, Python highlighting and the HTML kept
from display() outputs. Everything becomes DOM nodes; markup in the text stays text."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from .web_support import Web


def render(page: Page, module: str, function: str, text: str) -> Any:
    """``function(text)`` of the page's module: the rendered nodes' HTML, and whether anything ran."""
    return page.evaluate(
        """async ([module, fn, text]) => {
            window.ran = 0;
            const mod = await import(`/web/js/${module}.js`);
            const box = document.createElement("div");
            box.append(mod[fn](text));
            document.body.append(box);
            await new Promise((r) => setTimeout(r, 100));
            return { html: box.innerHTML, text: box.textContent, ran: window.ran };
        }""",
        [module, function, text],
    )


def test_markdown(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    text = (
        "# Total\n\nThe sum is **63** and *rising*, see `df.sum()` and [docs](https://example.org/x).\n\n"
        "- one\n- two\n\n1. first\n2. second\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n"
        "```python\nx = 1  # one\n```\n\n> quoted\n\n[bad](javascript:window.ran=1) "
        "<img src=x onerror=window.ran=2> <b>not bold</b>"
    )
    out = render(page, "markdown", "renderMarkdown", text)
    html = out["html"]
    assert "<h3>Total</h3>" in html
    assert "<strong>63</strong>" in html and "<em>rising</em>" in html and "<code>df.sum()</code>" in html
    assert (
        '<a href="https://example.org/x" rel="noopener noreferrer nofollow" target="_blank">docs</a>' in html
    )
    assert "<ul><li>one</li><li>two</li></ul>" in html and "<ol><li>first</li><li>second</li></ol>" in html
    assert '<th scope="col">a</th>' in html and "<td>2</td>" in html
    assert '<span class="tok-comment"># one</span>' in html
    assert "<blockquote><p>quoted</p></blockquote>" in html
    assert 'href="javascript' not in html and "bad" in out["text"]
    assert "&lt;img src=x onerror=window.ran=2&gt;" in html and "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert out["ran"] == 0


def test_highlighting_keeps_the_code_as_text(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    code = 'def f(x):\n    return "<script>window.ran=1</script>" + str(x) # note\nprint(f(1.5e3))'
    out = render(page, "highlight", "highlight", code)
    assert out["text"] == code
    assert '<span class="tok-keyword">def</span>' in out["html"]
    assert '<span class="tok-number">1.5e3</span>' in out["html"]
    assert "&lt;script&gt;" in out["html"] and out["ran"] == 0


def test_display_html_keeps_tables_and_drops_everything_active(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    html = (
        '<style>body{display:none}</style><table class="dataframe" onclick="window.ran=1">'
        '<thead><tr><th colspan="2" style="color:red">h</th></tr></thead>'
        "<tbody><tr><td>1</td><td><a href='javascript:window.ran=2'>link</a></td></tr></tbody></table>"
        "<script>window.ran=3</script><img src=x onerror='window.ran=4'><iframe srcdoc='x'></iframe>"
        "<svg onload='window.ran=5'></svg>"
    )
    out = render(page, "sanitize", "sanitizedHtml", html)
    assert out["ran"] == 0
    assert '<th colspan="2">h</th>' in out["html"] and "<td>link</td>" in out["html"]
    for gone in ("<style", "<script", "<img", "<iframe", "<svg", "<a ", "onclick", "style="):
        assert gone not in out["html"], gone


def test_a_network_request_is_one_line_of_its_step_and_its_text_stays_text(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    out = page.evaluate(
        """async () => {
            window.ran = 0;
            const { RunView } = await import("/web/js/run_view.js");
            const view = new RunView("r_0000000000000001", "q");
            document.body.append(view.el);
            const base = { host: "api.example.com", port: 443, method: "GET", bytes_up: 0, secrets: [] };
            view.add({ id: 1, type: "step_started", data: { step: 1, ts: 1 } });
            view.add({ id: 2, type: "network_request", data: { ...base, step: 1, path: "/v1/items",
                status: 200, bytes_down: 120, duration_ms: 12.4, refused: false, reason: "",
                secrets: ["API_KEY"] } });
            view.add({ id: 3, type: "network_request", data: { ...base, step: 1, host: "evil.example",
                path: "/<img src=x onerror=window.ran=1>", status: 0, bytes_down: 0, duration_ms: 1,
                refused: true, reason: "not in your tenant's network allow-list" } });
            await new Promise((r) => setTimeout(r, 100));
            const lines = [...view.el.querySelectorAll('[data-testid="network-request"]')];
            const row = (l) => [l.className, l.textContent, l.closest("section")?.dataset.step];
            return { lines: lines.map(row), ran: window.ran };
        }"""
    )
    assert out["ran"] == 0
    (ok_class, ok_text, ok_step), (bad_class, bad_text, bad_step) = out["lines"]
    assert ok_class == "network" and ok_step == "1"
    assert (
        ok_text == "↔ GET api.example.com:443/v1/items → 200 · 0 B up · 120 B down · 12 ms · secrets API_KEY"
    )
    assert bad_class == "network refused" and bad_step == "1"
    assert bad_text.startswith("⛔ GET evil.example:443/<img src=x") and "allow-list" in bad_text


def test_a_run_view_shows_previews_rejected_code_and_notices(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    frames = [
        {"type": "run_started", "data": {"question": "q"}},
        {"type": "files_previewed", "data": {"files": ["a.csv"], "text": "- a.csv (4 B, table)"}},
        {"type": "step_started", "data": {"step": 1, "ts": 1}},
        {"type": "action_parsed", "data": {"step": 1, "thought": "t", "action": "execute_code", "code": "x"}},
        {"type": "code_rejected", "data": {"step": 1, "code": "x", "problems": ["undefined name 'x'"]}},
        {"type": "notice", "data": {"step": 1, "kind": "docs", "message": "json.dumps(obj)<b>"}},
        {"type": "notice", "data": {"step": 1, "kind": "repeat", "message": "same"}},
    ]
    out = page.evaluate(
        """async (frames) => {
            const { RunView } = await import("/web/js/run_view.js");
            const view = new RunView("r1", "q");
            for (const f of frames) view.add(f);
            document.body.append(view.el);
            const all = (id) => [...view.el.querySelectorAll(`[data-testid=${id}]`)];
            const text = (id) => all(id).map((e) => e.textContent);
            return { previewed: text("files-previewed"), rejected: text("step-rejected"),
                     docs: text("step-docs"), notes: text("run-note"), html: view.el.innerHTML };
        }""",
        frames,
    )
    assert out["previewed"] == ["The model was shown the structure of a.csv- a.csv (4 B, table)"]
    assert out["rejected"] == ["Not run: a check found\nundefined name 'x'"]
    assert out["docs"] == ["Documentation shown to the modeljson.dumps(obj)<b>"]
    assert "&lt;b&gt;" in out["html"]  # the message stays text
    assert len(out["notes"]) == 1 and "same code and output" in out["notes"][0]
