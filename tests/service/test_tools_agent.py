"""The agent and the tool store: a run saves a function it wrote as a tool with ``save_tool`` (tested by the
service in a fresh session, the outcome in the step's observation), a later run of another user imports
it, and a run's system prompt lists the tenant's tools, the most relevant to its question when there are
many. Real server, real sandbox sessions; the model is the scripted QuestionModel."""

from __future__ import annotations

import ast
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from thinkbox.service.tools import inside
from thinkbox.service.tools.agent import rank, tools_section
from thinkbox.service.tools.spec import ToolRefused, check
from thinkbox.service.tools.store import ToolInfo

from .conftest import Running
from .service_support import program, read_sse, tool_info

VOWELS = 'def count_vowels(text):\n    return sum(c in "aeiou" for c in text.lower())'
SAVE = (
    "from tools import save_tool\n"
    "save_tool(count_vowels, name={name!r}, description='Count the vowels of a text', "
    "tests='def test_banana():\\n    assert count_vowels(\"Banana\") == {expected}')"
)


def run(client: httpx.Client, question: str) -> list[dict[str, Any]]:
    """Submit ``question`` and read its events to the end."""
    response = client.post("/v1/runs", json={"question": question})
    assert response.status_code == 201, response.text
    with client.stream("GET", f"/v1/runs/{response.json()['id']}/events") as events:
        return read_sse(events)


def observations(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["observation"] for e in events if e["event"] == "execution_finished"]


def test_a_run_saves_a_tool_and_a_later_run_of_another_user_imports_it(running: Running) -> None:
    name = f"vowels_{secrets.token_hex(3)}"
    with running.client(running.alice) as alice, running.client(running.bob) as bob:
        # wrong tests first: refused, and the model is told why
        first = run(alice, program([VOWELS, SAVE.format(name=name, expected=2)], "not saved"))
        refused = observations(first)[-1]
        assert "NOT saved" in refused and "test_banana" in refused and "AssertionError" in refused
        assert alice.get(f"/v1/tools/{name}").status_code == 404

        second = run(alice, program([VOWELS, SAVE.format(name=name, expected=3)], "saved"))
        saved = observations(second)[-1]
        assert f"tool {name!r} saved as version 1 (1 tests passed" in saved, saved
        assert f"from tools.{name} import count_vowels" in saved
        tool = alice.get(f"/v1/tools/{name}").json()
        assert tool["author"] == "alice" and tool["description"] == "Count the vowels of a text"
        assert tool["source"].strip() == VOWELS

        later = run(
            bob, program([f"from tools.{name} import count_vowels\nprint(count_vowels('thinkbox'))"], "2")
        )
        assert observations(later)[0].startswith("Output:\n2\n"), observations(later)
        assert later[-1]["data"]["status"] == "answered"
        session = running.server.service.sessions.live(_session_of(bob, later))
        assert session is not None
        prompt = session.history[0]["content"]
        # relevant to the question (which names it): imported before the run (service.preimport_tools)
        assert (
            f"- count_vowels(text): Count the vowels of a text (already imported in this session from "
            f"tools.{name}: call it directly" in prompt
        )


def _session_of(client: httpx.Client, events: list[dict[str, Any]]) -> str:
    run_id = events[0]["data"]["run_id"]
    return str(client.get(f"/v1/runs/{run_id}").json()["session_id"])


def test_a_saved_tool_with_helpers_and_imports_carries_them(running: Running) -> None:
    name = f"words_{secrets.token_hex(3)}"
    helper = "import re\ndef _norm(s):\n    return s.lower()\n"
    tests = 'def test_w():\\n    assert words("A b") == ["a", "b"]'
    steps = [
        helper + "def words(text):\n    return re.findall(r'[a-z]+', _norm(text))",
        f"from tools import save_tool\nsave_tool(words, name={name!r}, tests='{tests}')",
    ]
    with running.client(running.alice) as alice:
        saved = observations(run(alice, program(steps, "ok")))[-1]
        assert "saved as version 1" in saved, saved
        source = alice.get(f"/v1/tools/{name}").json()["source"]
        assert source.startswith("import re\n") and "def _norm(s):" in source


def _tool(name: str, description: str, updated: float) -> ToolInfo:
    return tool_info(name, description, updated=updated)


def test_the_prompt_lists_the_most_relevant_tools_when_there_are_many() -> None:
    tools = [_tool(f"tool_{i}", f"does thing number {i}", float(i)) for i in range(20)]
    tools += [
        _tool("count_primes", "Count the prime numbers below n", 1.0),
        _tool("parse_invoice", "Read the total of an invoice PDF", 2.0),
    ]
    ranked = rank(tools, "How many primes are there below 1000?")
    assert ranked[0].name == "count_primes"
    section = tools_section(tools, "What is the total of invoice 7?", limit=3)
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(listed) == 3 and listed[0].startswith("- from tools.parse_invoice import parse_invoice")
    assert "19 more: tools.available()" in section and "save_tool(" in section
    # no word in common: the most recently changed ones
    assert [t.name for t in rank(tools, "zzz")[:2]] == ["tool_19", "tool_18"]
    # few tools: all of them, by name
    few = tools_section(tools[:2], "anything", limit=8)
    assert [line.split()[2] for line in few.splitlines() if line.startswith("- ")] == [
        "tools.tool_0",
        "tools.tool_1",
    ]


def test_the_sessions_tools_package_needs_only_the_standard_library() -> None:
    tree = ast.parse(Path(inside.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_a_save_tool_request_that_no_database_could_store_is_refused() -> None:
    # json.loads, which reads save_tool's request, accepts lone surrogates that the API's parser refuses
    with pytest.raises(ToolRefused, match="not valid Unicode"):
        check("f", "", "def f():\n    return '\ud800'\n", "def test_f():\n    assert f()\n")
