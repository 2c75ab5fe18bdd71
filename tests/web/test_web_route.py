"""The page shows how a run went about answering, as text: the route it took and why (route_chosen), a
decomposition's plan and its parts' tests, the critic's check of the answer."""

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


def test_the_run_view_shows_a_plan_its_parts_tests_and_the_answers_check(web: Web, page: Page) -> None:
    page.goto(web.url + "/")
    shown = page.evaluate(
        """async () => {
            const { RunView } = await import("/web/js/run_view.js");
            const view = new RunView("r_1", "q");
            document.body.append(view.el);
            view.add({ id: 1, type: "plan_made", data: { orchestration: "chain", compose: "triple(n)",
                functions: [{ name: "triple", signature: "def triple(n)", contract: "3n", test: "" }] } });
            view.add({ id: 2, type: "part_tested", data: { step: 1, name: "triple", passed: false,
                attempt: 1, error: "<i>AssertionError</i>" } });
            view.add({ id: 3, type: "answer_checked", data: { step: 2, answer: "7", checks: ["numbers"],
                passed: false, retry: true, problems: ["7 is not in any output"] } });
            const text = (id) => view.el.querySelector(`[data-testid=${id}]`).textContent;
            const step1 = view.el.querySelector("[data-step='1']").textContent;
            return { plan: text("plan"), part: text("part-tested"), check: text("run-note"), step1,
                     italic: view.el.querySelectorAll("i").length };
        }"""
    )
    assert shown["plan"] == "Plan (chain): triple · triple(n)"
    assert shown["part"] == "✗ triple: its test failed (check 1): <i>AssertionError</i>"
    assert shown["italic"] == 0 and shown["part"] in shown["step1"]  # text, in its step
    assert shown["check"] == "✗ Answer checked (numbers): asking the model once more: 7 is not in any output"
