"""Decomposition (agent.decompose): plan, tested parts, composition, with the scripted model and a real
sandbox; the plans' tests run for real in the session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_support import answer, collect, make_settings
from agent_support import code as support_code
from rich.console import Console

from thinkbox.agent.decompose import PLAN_SCHEMA, PlanError, checked_test, parse_plan, run_decomposed
from thinkbox.agent.events import (
    Event,
    FinalAnswer,
    LimitReached,
    PartTested,
    PlanMade,
    RouteChosen,
    RunFinished,
    RunStarted,
    StepStarted,
    parse_event,
)
from thinkbox.agent.route import run_routed
from thinkbox.cli.render import Renderer
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.session import Session

pytestmark = pytest.mark.asyncio(loop_scope="session")


def code(text: str) -> dict[str, str]:
    return support_code(text, thought="write it")


def part(name: str, test: str) -> dict[str, str]:
    return {
        "name": name,
        "signature": f"def {name}(x: int) -> int",
        "contract": "int in, int out",
        "test": test,
    }


TWO_PARTS = {
    "parts": [part("double", "assert double(2) == 4"), part("inc", "assert inc(4) == 5")],
    "compose": "inc(double(n))",
}


def of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def text_of(request: Any) -> str:
    return "\n".join(m["content"] for m in request.messages)


@pytest.mark.parametrize("orchestration", ["chain", "class"])
async def test_two_parts_are_written_tested_and_composed_into_the_answer(
    session: Session, tmp_path: Path, orchestration: str
) -> None:
    compose = (
        code("print(inc(double(20)))")
        if orchestration == "chain"
        else code(
            "class Solver:\n    def __init__(self, n):\n        self.n = n\n    def solve(self):\n"
            "        return inc(double(self.n))\nprint(Solver(20).solve())"
        )
    )
    model = ScriptedModel([
        TWO_PARTS,
        code("def double(x):\n    return 2 * x\nassert double(2) == 4\nprint('ok')"), answer("done"),
        code("def inc(x):\n    return x + 1\nassert inc(4) == 5\nprint('ok')"), answer("done"),
        compose, answer("41"),
    ])  # fmt: skip
    settings = make_settings(tmp_path, decompose=orchestration)
    history: list[Any] = []
    events = await collect(
        run_routed(
            "What is twice 20, plus one?", model=model, session=session, settings=settings, history=history
        )
    )
    assert isinstance(events[0], RunStarted) and isinstance(events[1], RouteChosen)
    assert f"decomposed ({orchestration})" in events[1].reason
    plan = events[2]
    assert isinstance(plan, PlanMade) and plan.orchestration == orchestration
    assert [f.name for f in plan.functions] == ["double", "inc"] and plan.note == ""
    assert model.requests[0].json_schema == PLAN_SCHEMA
    tested = of(events, PartTested)
    assert [(t.name, t.passed, t.attempt) for t in tested] == [("double", True, 1), ("inc", True, 1)]
    assert len(of(events, RunStarted)) == 1 and len(of(events, RunFinished)) == 1
    assert [s.step for s in of(events, StepStarted)] == [2, 3, 4, 5, 6, 7]  # the plan call was step 1
    assert of(events, FinalAnswer)[0].answer == "41"
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "answered" and finished.steps == 7
    assert finished.tokens == of(events, FinalAnswer)[0].tokens > plan.tokens > 0  # the plan's tokens count
    composing = text_of(model.requests[5])
    assert "already defines" in composing and "def double(x: int) -> int" in composing
    assert ("solve()" in composing) == (orchestration == "class")
    # a part's sub-question is focused: its own history, the question only as context
    assert "Write one Python function" in text_of(model.requests[1]) and "41" not in text_of(
        model.requests[1]
    )
    # the caller's chat holds the composing step, so a follow-up question sees how it was answered
    assert history[0]["role"] == "system" and "What is twice 20" in history[1]["content"]
    assert history[-1]["content"].count("41") == 1
    for event in events:
        assert parse_event(event.model_dump_json()) == event


async def test_a_failing_part_test_goes_back_to_the_model_which_fixes_it(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([
        {"parts": [part("triple", "assert triple(2) == 6")], "compose": "triple(n)"},
        code("def triple(x):\n    return x + 3"), answer("done"),  # wrong, and its test not run
        code("def triple(x):\n    return 3 * x"), answer("done"),
        code("print(triple(7))"), answer("21"),
    ])  # fmt: skip
    events = await collect(
        run_decomposed(
            "Triple 7.", model=model, session=session, settings=make_settings(tmp_path, decompose="chain")
        )
    )
    tested = of(events, PartTested)
    assert [(t.passed, t.attempt) for t in tested] == [(False, 1), (True, 2)]
    assert "triple(2) returned 5, expected 6" in tested[0].error
    retry = model.requests[3]  # the part's sub-run goes on with the failure
    assert "I ran the test and it failed" in text_of(retry) and "returned 5" in text_of(retry)
    assert "Write one Python function" in text_of(retry)  # the same part's history
    assert "its test failed" not in text_of(model.requests[5])  # fixed: composed as tested
    assert of(events, FinalAnswer)[0].answer == "21"


async def test_a_part_still_failing_is_named_to_the_composing_step(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([
        {"parts": [part("half", "assert half(8) == 4")], "compose": "half(n)"},
        code("def half(x):\n    return x"), answer("done"),
        code("def half(x):\n    return x - 1"), answer("done"),
        code("print(10 // 2)"), answer("5"),
    ])  # fmt: skip
    events = await collect(
        run_decomposed(
            "Half of 10?", model=model, session=session, settings=make_settings(tmp_path, decompose="chain")
        )
    )
    assert [t.passed for t in of(events, PartTested)] == [False, False]
    assert "its test failed: fix it before you use it" in text_of(model.requests[5])
    assert of(events, FinalAnswer)[0].answer == "5"


async def test_an_empty_plan_runs_the_plain_loop(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([{"parts": [], "compose": ""}, code("print(6 * 7)"), answer("42")])
    events = await collect(
        run_decomposed(
            "What is 6*7?", model=model, session=session, settings=make_settings(tmp_path, decompose="class")
        )
    )
    plan = of(events, PlanMade)[0]
    assert plan.functions == [] and "planned no parts" in plan.note
    assert of(events, PartTested) == []
    assert text_of(model.requests[1]).endswith("What is 6*7?")  # the question as asked, nothing composed
    assert of(events, FinalAnswer)[0].answer == "42"
    assert isinstance(events[-1], RunFinished) and events[-1].steps == 3


async def test_a_malformed_plan_reply_falls_back_to_the_plain_loop_with_a_note(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel(["I would write a function.", code("print(6 * 7)"), answer("42")])
    events = await collect(
        run_decomposed(
            "What is 6*7?", model=model, session=session, settings=make_settings(tmp_path, decompose="chain")
        )
    )
    plan = of(events, PlanMade)[0]
    assert plan.functions == [] and "not usable" in plan.note and "plain loop" in plan.note
    assert of(events, FinalAnswer)[0].answer == "42"


async def test_the_step_limit_holds_for_the_whole_run_and_parts_leave_steps_to_compose(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([
        TWO_PARTS,
        code("def double(x):\n    return 2 * x"),  # each part gets one step: (6 - plan - 3 to compose) / 2
        code("def inc(x):\n    return x + 1"),
        code("print(1)"), code("print(2)"), code("print(3)"),
    ])  # fmt: skip
    settings = make_settings(tmp_path, decompose="chain", max_steps=6)
    events = await collect(
        run_decomposed("Twice 20 plus one?", model=model, session=session, settings=settings)
    )
    assert [(t.name, t.passed) for t in of(events, PartTested)] == [("double", True), ("inc", True)]
    assert "already defines" in text_of(model.requests[3])
    limit = of(events, LimitReached)
    assert len(limit) == 1 and limit[0].limit == "steps" and "6 steps" in limit[0].message
    assert isinstance(events[-1], RunFinished) and events[-1].status == "limit" and events[-1].steps == 6
    assert len(model.requests) == 6


async def test_parts_without_steps_left_are_named_to_the_composing_step(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([TWO_PARTS, code("print(2 * 20 + 1)"), answer("41")])
    settings = make_settings(tmp_path, decompose="class", max_steps=4)
    events = await collect(
        run_decomposed("Twice 20 plus one?", model=model, session=session, settings=settings)
    )
    assert of(events, PartTested) == []
    assert text_of(model.requests[1]).count("not written yet") == 2
    assert of(events, FinalAnswer)[0].answer == "41"


async def test_the_renderer_shows_the_plan_and_each_part_briefly(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([
        {"parts": [part("triple", "assert triple(2) == 6")], "compose": "triple(n)"},
        code("def triple(x):\n    return x + 3"), answer("done"),
        code("def triple(x):\n    return 3 * x"), answer("done"),
        code("print(triple(7))"), answer("21"),
    ])  # fmt: skip
    console = Console(record=True, width=120, color_system=None)
    render = Renderer(console)
    async for event in run_decomposed("Triple 7.", model=model, session=session,
                                      settings=make_settings(tmp_path, decompose="chain")):  # fmt: skip
        render(event)
    shown = console.export_text()
    assert "plan (chain): triple · triple(n)" in shown
    assert "✗ triple: its test failed (check 1): AssertionError: triple(2) returned 5, expected 6" in shown
    assert "✓ triple: its test passed" in shown


async def test_parse_plan_says_what_is_wrong() -> None:
    def reply(**fields: str) -> str:
        one = {"name": "f", "signature": "def f(x)", "contract": "c", "test": "assert f(1) == 2", **fields}
        return json.dumps({"parts": [one], "compose": ""})

    functions, _ = parse_plan("Here it is: " + reply())
    assert functions[0].name == "f"
    cases = {
        reply(signature="def g(x)"): "does not define f",
        reply(test="f(1)"): "asserts nothing",
        reply(test="assert f(1 =="): "not Python",
        reply(name="f-1", signature="def f-1(x)"): "not a unique Python name",
        '{"parts": [{"name": "f", "signature": "def f(x)"}]}': "not name, signature, contract, test",
        '{"compose": "x"}': 'no "parts" list',
        "{not json}": "not JSON",
    }
    for text, why in cases.items():
        with pytest.raises(PlanError, match=why):
            parse_plan(text)


async def test_the_test_code_reports_what_the_function_returned() -> None:
    namespace: dict[str, Any] = {"f": lambda x: x + 1}
    with pytest.raises(AssertionError, match=r"f\('a'\) returned 'a1', expected 'b'"):
        namespace["f"] = lambda s: s + "1"
        exec(checked_test("assert f('a') == 'b'"), namespace)
    exec(checked_test("assert f('a') == 'a1'"), namespace)
    assert checked_test("assert ok") == "assert ok"
