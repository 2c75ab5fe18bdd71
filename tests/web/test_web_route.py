"""The page shows which route a run took and why (the route_chosen event), as text."""

from __future__ import annotations

from playwright.sync_api import Page

from .web_support import Web


def test_the_run_view_shows_the_route_and_its_reason(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    shown = page.evaluate(
        """async () => {
            const { RunView } = await import("/web/js/run_view.js");
            const view = new RunView("r_1", "Capital of France?");
            document.body.append(view.el);
            view.add({ id: 1, type: "run_started", data: { question: "Capital of France?" } });
            view.add({ id: 2, type: "route_chosen", data: { route: "direct",
                reason: "the answer is a program <b>to write</b>", tokens: 40, duration_s: 1.5 } });
            const note = view.el.querySelector("[data-testid=route]");
            const bold = note.querySelectorAll("b").length;
            return { text: note.textContent, route: note.dataset.route, bold };
        }"""
    )
    assert shown["route"] == "direct" and shown["bold"] == 0  # the reason is text, never markup
    assert shown["text"].startswith(
        "Answering directly, without code: the answer is a program <b>to write</b>"
    )
    assert "decided in" in shown["text"]
