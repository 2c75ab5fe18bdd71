"""The agent writing JavaScript or bash (agent.language), or choosing per step (auto): the scripted model
against a real sandbox session, and the action schema and prompts each setting gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_support import make_settings

from thinkbox.agent import prompts
from thinkbox.agent.actions import Action, action_json_schema
from thinkbox.agent.events import CodeStarted, Event, ExecutionFinished, FinalAnswer
from thinkbox.agent.loop import action_request, run_agent
from thinkbox.agent.resume import recorded_state, replay
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session

pytestmark = pytest.mark.asyncio(loop_scope="session")


def step(code: str, language: str | None = None) -> dict[str, str]:
    action = {"thought": "compute", "action": "execute_code", "code": code, "final_answer": ""}
    return action if language is None else {**action, "language": language}


def answer(text: str) -> dict[str, str]:
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": text}


async def run(
    question: str, model: ScriptedModel, session: Session, tmp_path: Path, **agent: Any
) -> list[Event]:
    settings = make_settings(tmp_path, **agent)
    return [e async for e in run_agent(question, model=model, session=session, settings=settings)]


async def test_a_javascript_agent_runs_its_code_as_javascript(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel(
        [step("const n = 48271 * 9173\nconsole.log(n)"), step("console.log(n + 1)"), answer("x")]
    )
    events = await run("What is 48271 * 9173?", model, session, tmp_path, language="js", reply_format="json")
    first, second = [e for e in events if isinstance(e, ExecutionFinished)]
    assert first.result.stdout == "442789883\n" and second.result.stdout == "442789884\n"
    assert [e.language for e in events if isinstance(e, CodeStarted)] == ["js", "js"]
    system = model.requests[0].messages[0]["content"]
    assert system == prompts.system_prompt([], "js") and "console.log" in system
    assert "language" not in str(model.requests[0].json_schema)  # the schema of a one-language agent


async def test_a_shell_agent_keeps_its_variables_and_directory(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([step("mkdir -p d && cd d && x=7"), step("echo $x $PWD"), answer("7")])
    events = await run("Where?", model, session, tmp_path, language="sh")
    assert [e.result.stdout for e in events if isinstance(e, ExecutionFinished)][1] == "7 /workspace/d\n"


async def test_an_auto_agent_runs_each_step_in_the_language_it_names(
    session: Session, tmp_path: Path
) -> None:
    replies = [
        step("open('n.txt', 'w').write(str(2 ** 20))", "py"),
        step("console.log(Number(require('fs').readFileSync('n.txt', 'utf8')) + 1)", "javascript"),
        step("cat n.txt", "sh"),
        step("print(open('n.txt').read())"),  # no language: Python
        answer("1048577"),
    ]
    model = ScriptedModel(replies)
    events = await run(
        "Check it in two languages", model, session, tmp_path, language="auto", reply_format="json"
    )
    assert [e.language for e in events if isinstance(e, CodeStarted)] == ["py", "js", "sh", "py"]
    outputs = [e.result.stdout for e in events if isinstance(e, ExecutionFinished)]
    assert outputs == ["", "1048577\n", "1048576", "1048576\n"]
    assert isinstance(events[-2], FinalAnswer) and events[-2].answer == "1048577"
    schema = model.requests[0].json_schema
    assert schema == action_json_schema(True) and "language" in schema["anyOf"][0]["properties"]
    assert '"language": "js"' in model.requests[0].messages[0]["content"]  # the examples name each language


async def test_the_python_agent_keeps_its_schema_prompt_and_history_form(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, reply_format="json")
    request = action_request([], settings)
    assert request.json_schema == action_json_schema()
    assert all("language" not in v["properties"] for v in request.json_schema["anyOf"])
    assert prompts.system_prompt([]) == prompts.system_prompt([], "py")
    action = Action.model_validate(step("print(1)"))
    assert '"language"' not in action.to_message()
    chosen = Action.model_validate(step("console.log(1)", "node"))
    assert chosen.language == "js" and '"language": "js"' in chosen.to_message()


async def test_a_resumed_run_replays_each_cell_in_its_language(
    session: Session, backend: SandboxBackend, tmp_path: Path
) -> None:
    model = ScriptedModel([step("globalThis.n = 40 + 2", "js"), step("m=7", "sh"), answer("42")])
    events = await run("Compute", model, session, tmp_path, language="auto")
    state = recorded_state(events)
    assert [(c.code, c.language) for c in state.cells] == [("globalThis.n = 40 + 2", "js"), ("m=7", "sh")]
    fresh = await backend.create_session()
    try:
        assert await replay(fresh, state.cells) is None
        assert (await fresh.execute("n", language="js")).result == "42"
        assert (await fresh.execute("echo $m", language="sh")).stdout == "7\n"
    finally:
        await fresh.close()
