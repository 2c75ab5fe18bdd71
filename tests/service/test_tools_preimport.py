"""Saved tools imported into a session before its first run (``service.preimport_tools``): the listed tools
relevant to the question are callable in the first step without an import, and the system prompt says so;
an irrelevant tool, another tenant's tool and a tool whose import fails are not imported; a session rebuilt
after a restart, and a first run resumed after one, get the same imports before their cells replay. Real
server, real sandbox sessions; the model is the scripted QuestionModel."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx

from thinkbox.service.tools.agent import to_preimport, tools_section
from thinkbox.service.tools.store import ToolInfo

from .conftest import Running
from .service_support import program, read_sse, running_server, tool_info

IMPORTED = "(already imported in this session from tools.{name}: call it directly; do not write it again)"
LIST_NAMES = "print(sorted(k for k in globals() if not k.startswith('_')))"


def tool_source(name: str) -> str:
    return f'def {name}(n):\n    """Seven times n, plus one."""\n    return 7 * n + 1\n'


def save(client: httpx.Client, name: str, description: str) -> None:
    tests = f"def test_{name}():\n    assert {name}(6) == 43\n"
    body = {"name": name, "description": description, "source": tool_source(name), "tests": tests}
    response = client.post("/v1/tools", json=body)
    assert response.status_code == 201, response.text


def run(client: httpx.Client, question: str, session_id: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"question": question}
    if session_id is not None:
        body["session_id"] = session_id
    response = client.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    with client.stream("GET", f"/v1/runs/{response.json()['id']}/events") as events:
        return read_sse(events)


def outputs(events: list[dict[str, Any]]) -> list[str]:
    """What each step showed the model (a step lint refused shows why instead)."""
    kinds = ("execution_finished", "code_rejected")
    return [e["data"]["observation"] for e in events if e["event"] in kinds]


def session_of(client: httpx.Client, events: list[dict[str, Any]]) -> str:
    return str(client.get(f"/v1/runs/{events[0]['data']['run_id']}").json()["session_id"])


def system_prompt(running: Running, question: str) -> str:
    """The system prompt of the model's latest request for ``question``."""
    return str(running.server.model.systems[question])


def test_a_relevant_tool_is_callable_in_the_first_step_and_the_prompt_says_it_is_imported(
    running: Running,
) -> None:
    tag = secrets.token_hex(3)
    wanted, other = f"frobnicate_{tag}", f"quux_{secrets.token_hex(4)}"  # no word in common
    with running.client(running.alice) as alice, running.client(running.carol) as carol:
        save(alice, wanted, "Frobnicate a count")
        save(alice, other, "Shuffle playing cards")
        question = program([f"print({wanted}(6))", LIST_NAMES], "43")
        events = run(alice, question)
        assert events[-1]["data"]["status"] == "answered", events[-1]
        shown = outputs(events)
        assert shown[0].startswith("Output:\n43\n"), shown  # called without an import, accepted by lint
        assert f"'{wanted}'" in shown[1] and other not in shown[1], shown[1]
        # the import was not a step: the run's steps and cells are the model's two
        assert [e["data"]["step"] for e in events if e["event"] == "code_started"] == [1, 2]
        prompt = system_prompt(running, question)
        assert f"- {wanted}(n): Frobnicate a count {IMPORTED.format(name=wanted)}" in prompt, prompt
        assert f"from tools.{wanted} import" not in prompt
        assert f"tools.{other}: call it directly" not in prompt  # listed (or not) with its import line only

        # another tenant: the name does not exist and its prompt does not mention the tool
        theirs = run(carol, program([f"print({wanted}(6))"], "no"))
        assert not outputs(theirs)[0].startswith("Output:\n43") and wanted in outputs(theirs)[0]
        assert wanted not in system_prompt(running, program([f"print({wanted}(6))"], "no"))


def test_a_tool_whose_import_fails_is_left_out_and_the_run_goes_on(running: Running) -> None:
    tag = secrets.token_hex(3)
    good, broken = f"zapper_{tag}", f"zapped_{tag}"
    folder = running.data_dir / "tools" / "acme" / "shared" / "tools"
    with running.client(running.alice) as alice:
        save(alice, good, "Zap a count")
        save(alice, broken, "Zap a count too")
        (folder / f"{broken}.py").write_text("raise RuntimeError('this module no longer imports')\n")
        try:
            question = program([f"print({good}(1), '{broken}' in globals())"], "8")
            events = run(alice, question)
        finally:
            running.server.service.tools.sync()  # the folder written again from the database
        assert events[-1]["data"]["status"] == "answered", events[-1]
        assert outputs(events)[0].startswith("Output:\n8 False\n"), outputs(events)
        prompt = system_prompt(running, question)
        assert IMPORTED.format(name=good) in prompt and IMPORTED.format(name=broken) not in prompt
        assert f"- from tools.{broken} import {broken}: {broken}(n)" in prompt, prompt


def test_with_preimport_off_the_model_imports_tools_itself(tmp_path: Path) -> None:
    name = f"frobnicate_{secrets.token_hex(3)}"
    with (
        running_server(tmp_path, preimport_tools=False) as running,
        running.client(running.alice) as alice,
    ):
        save(alice, name, "Frobnicate a count")
        question = program([f"print({name}(6))", f"from tools.{name} import {name}\nprint({name}(6))"], "43")
        events = run(alice, question)
        first, second = outputs(events)
        # not defined: lint (or the interpreter) says so
        assert not first.startswith("Output:\n43") and name in first, first
        assert second.startswith("Output:\n43\n"), second
        prompt = system_prompt(running, question)
        assert f"- from tools.{name} import {name}: {name}(n). Frobnicate a count" in prompt, prompt
        assert "already imported" not in prompt


def test_a_session_rebuilt_after_a_restart_has_the_imported_names(tmp_path: Path, db_url: str) -> None:
    name = f"frobnicate_{secrets.token_hex(3)}"
    data = tmp_path / "data"
    with running_server(data, db_url) as first, first.client(first.alice) as alice:
        save(alice, name, "Frobnicate a count")
        events = run(alice, program([f"x = {name}(6)\nprint(x)"], "43"))
        assert outputs(events)[0].startswith("Output:\n43\n"), outputs(events)
        session_id = session_of(alice, events)
    with running_server(data, db_url) as second, second.client(second.alice) as alice:
        # the recorded cell calls the tool without importing it: it replays only after the same import
        question = program([f"print(x, {name}(1))"], "43 8")
        later = run(alice, question, session_id)
        assert later[-1]["data"]["status"] == "answered", later[-1]
        assert outputs(later)[0].startswith("Output:\n43 8\n"), outputs(later)
        assert IMPORTED.format(name=name) in system_prompt(second, question)


def test_a_first_run_resumed_after_a_restart_imports_before_its_cells_replay(tmp_path: Path) -> None:
    name = f"frobnicate_{secrets.token_hex(3)}"
    data = tmp_path / "data"
    # step 2 is still sleeping when the server stops; after the restart step 1 replays (it needs the
    # import), then step 2 runs again
    question = program([f"x = {name}(6)", f"import time\ntime.sleep(6)\nprint(x, {name}(1))"], "43 8")
    with running_server(data) as first, first.client(first.alice) as alice:
        save(alice, name, "Frobnicate a count")
        response = alice.post("/v1/runs", json={"question": question})
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        with alice.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            kind = ""
            for line in stream.iter_lines():
                kind = line[7:] if line.startswith("event: ") else kind
                if kind == "code_started" and line.startswith("data: ") and json.loads(line[6:])["step"] == 2:
                    break
    with running_server(data) as second, second.client(second.alice) as alice:
        with alice.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            events = read_sse(stream)
        kinds = [e["event"] for e in events]
        assert "run_resumed" in kinds and events[-1]["data"]["status"] == "answered", kinds
        assert outputs(events)[-1].startswith("Output:\n43 8\n"), outputs(events)
        assert IMPORTED.format(name=name) in system_prompt(second, question)


def _tool(name: str, description: str, functions: list[str], updated: float = 1.0) -> ToolInfo:
    return tool_info(name, description, functions, updated)


def test_what_is_pre_imported_relevant_listed_tools_at_most_three_without_builtins_or_private_names() -> None:
    tools = [
        _tool("business_days", "Count business days between two dates", ["business_days", "_easter", "sum"]),
        _tool("loan_payment", "Monthly payment of a loan", ["loan_payment"]),
        _tool("only_builtins", "business helpers", ["max", "_hidden", "print"]),
    ]
    tools += [_tool(f"days_{i}", f"days helper {i}", [f"days_{i}"], updated=i) for i in range(5)]
    wanted = to_preimport(tools, "How many business days are there in March 2026?", limit=8)
    # score > 0 only (not loan_payment), at most 3, none whose functions are all builtins or private
    assert list(wanted) == ["business_days", "days_4", "days_3"], wanted
    assert wanted["business_days"] == ["business_days"]
    assert to_preimport(tools, "What is the weather?", limit=8) == {}
    # only tools the prompt lists: with a limit of 1, the best one
    assert list(to_preimport(tools, "business days", limit=1)) == ["business_days"]
    section = tools_section(tools[:2], "business days", 8, imported=["business_days"])
    assert "- business_days(x): Count business days between two dates (already imported in this session " in (
        section
    )
    assert "- from tools.loan_payment import loan_payment: loan_payment(x). Monthly payment" in section
