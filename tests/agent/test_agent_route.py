"""Routing (``run_routed``): code, direct and auto, with the scripted model against a real sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_support import answer, code, collect, make_settings

from thinkbox.agent.conversation import Conversation
from thinkbox.agent.events import (
    ActionParsed,
    CodeStarted,
    Event,
    FinalAnswer,
    LimitReached,
    RouteChosen,
    RunError,
    RunFinished,
    RunStarted,
    parse_event,
)
from thinkbox.agent.route import DIRECT_SYSTEM, KIND_SCHEMA, run_routed
from thinkbox.models.base import ModelRequest
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.session import Session

pytestmark = pytest.mark.asyncio(loop_scope="session")


def of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def is_label(request: ModelRequest) -> bool:
    return request.json_schema == KIND_SCHEMA


async def test_route_code_runs_the_loop_and_says_so_after_run_started(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([code("print(6 * 7)"), answer("42")])
    events = await collect(
        run_routed(
            "What is 6*7?", model=model, session=session, settings=make_settings(tmp_path, route="code")
        )
    )
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[1], RouteChosen) and events[1].route == "code"
    assert "set to code" in events[1].reason
    assert of(events, FinalAnswer)[0].answer == "42"
    assert isinstance(events[-1], RunFinished) and events[-1].status == "answered"
    assert not any(is_label(r) for r in model.requests)


async def test_route_direct_makes_one_plain_call_and_runs_no_code(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel(["Paris"])
    history: list[Any] = []
    events = await collect(
        run_routed(
            "Capital of France?",
            model=model,
            session=session,
            history=history,
            settings=make_settings(tmp_path, route="direct"),
        )
    )
    assert [e.type for e in events] == ["run_started", "route_chosen", "final_answer", "run_finished"]
    assert events[1].route == "direct"  # type: ignore[union-attr]
    assert of(events, FinalAnswer)[0].answer == "Paris"
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.answer == "Paris" and finished.steps == 1
    assert finished.run_id == events[0].run_id  # type: ignore[union-attr]
    (request,) = model.requests
    assert request.messages[0]["content"] == DIRECT_SYSTEM and request.json_schema is None
    assert request.messages[-1] == {"role": "user", "content": "Capital of France?"}
    # the chat's history holds the answer as a provide_answer action, so a next question follows on
    assert json.loads(history[-1]["content"])["final_answer"] == "Paris"
    for event in events:  # every event survives the JSON-lines round trip
        assert parse_event(event.model_dump_json()) == event


async def test_auto_sends_a_program_to_the_direct_route_after_a_label_call(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([{"answer_is": "program"}, "def add(a, b):\n    return a + b"])
    events = await collect(
        run_routed(
            "Write a function add(a, b).",
            model=model,
            session=session,
            settings=make_settings(tmp_path, route="auto"),
        )
    )
    chosen = of(events, RouteChosen)
    assert [c.route for c in chosen] == ["direct"] and "program" in chosen[0].reason
    assert chosen[0].tokens > 0
    assert not of(events, CodeStarted)
    label, direct = model.requests
    assert is_label(label) and label.messages[0]["role"] == "system"  # shares the loop's system prompt
    assert "Write a function add" in label.messages[-1]["content"]
    assert direct.messages[0]["content"] == DIRECT_SYSTEM
    final = of(events, FinalAnswer)[0]
    assert final.answer.startswith("def add") and final.tokens > chosen[0].tokens


async def test_auto_value_goes_on_in_code_when_the_first_action_runs_code(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([{"answer_is": "value"}, code("print(48271 * 9173)"), answer("442789883")])
    events = await collect(
        run_routed(
            "What is 48271 * 9173?",
            model=model,
            session=session,
            settings=make_settings(tmp_path, route="auto"),
        )
    )
    types = [e.type for e in events]
    assert types.index("action_parsed") + 1 == types.index("route_chosen") < types.index("code_started")
    (chosen,) = of(events, RouteChosen)
    assert chosen.route == "code" and "compute" in chosen.reason
    assert of(events, FinalAnswer)[0].answer == "442789883"
    loop_tokens = of(events, ActionParsed)[-1].tokens
    assert events[-1].tokens == loop_tokens + chosen.tokens  # type: ignore[union-attr]


async def test_auto_value_answered_at_step_one_is_answered_by_the_direct_route(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([{"answer_is": "value"}, answer("Lyon"), "Paris"])
    history: list[Any] = []
    events = await collect(
        run_routed(
            "Capital of France?",
            model=model,
            session=session,
            history=history,
            settings=make_settings(tmp_path, route="auto"),
        )
    )
    (chosen,) = of(events, RouteChosen)
    assert chosen.route == "direct" and "step 1" in chosen.reason
    assert [e.answer for e in of(events, FinalAnswer)] == [
        "Paris"
    ]  # the loop's own answer is not the outcome
    assert not of(events, CodeStarted)
    assert events[-1].steps == 2  # type: ignore[union-attr]
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert json.loads(history[-1]["content"])["final_answer"] == "Paris"


async def test_auto_falls_back_to_a_direct_answer_when_the_code_route_hits_a_limit(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([{"answer_is": "value"}, code("x = 1"), code("y = 2"), "7"])
    settings = make_settings(tmp_path, route="auto", max_steps=2)
    events = await collect(run_routed("Pick a number.", model=model, session=session, settings=settings))
    routes = of(events, RouteChosen)
    assert [r.route for r in routes] == ["code", "direct"]
    assert "2 steps" in routes[1].reason and "max_steps" in routes[1].reason
    assert not of(events, LimitReached)  # the outcome is the direct answer, not the limit
    assert of(events, FinalAnswer)[0].answer == "7"
    assert events[-1].status == "answered" and events[-1].steps == 3  # type: ignore[union-attr]


async def test_auto_with_files_goes_to_code_without_a_label_call(session: Session, tmp_path: Path) -> None:
    await session.put_file("data.csv", b"a\n1\n2\n")
    model = ScriptedModel([code("print(open('data.csv').read().count('\\n'))"), answer("3")])
    events = await collect(
        run_routed(
            "How many lines?", model=model, session=session, settings=make_settings(tmp_path, route="auto")
        )
    )
    (chosen,) = of(events, RouteChosen)
    assert chosen.route == "code" and "files" in chosen.reason and chosen.tokens == 0
    assert not any(is_label(r) for r in model.requests)


async def test_a_model_that_fails_on_the_direct_route_ends_the_run_with_run_error(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([])  # no reply to give: the backend raises ModelError
    events = await collect(
        run_routed("Hi?", model=model, session=session, settings=make_settings(tmp_path, route="direct"))
    )
    assert isinstance(events[-2], RunError) and events[-2].code
    assert isinstance(events[-1], RunFinished) and events[-1].status == "error"


async def test_a_chat_follows_the_route_per_question(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel(["Paris", "Rome"])
    chat = Conversation(model=model, session=session, settings=make_settings(tmp_path, route="direct"))
    await collect(chat.ask("Capital of France?"))
    await collect(chat.ask("And of Italy?"))
    assert chat.answers == ["Paris", "Rome"]
    assert [m["role"] for m in chat.history] == ["system", "user", "assistant", "user", "assistant"]
