"""Tools harvested from a run: after a run answers, the service saves the functions its code defined and
called as tools of the tenant, with tests built from those calls and run in a fresh session
(``service.harvest_tools``). Real server, real sandbox sessions; the model is the scripted QuestionModel."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from thinkbox.agent.events import HarvestedTool, ToolsHarvested
from thinkbox.cli.render import Renderer
from thinkbox.service.tools.agent import HARVEST_HINT, tools_section
from thinkbox.service.tools.harvest import build_tests, candidates
from thinkbox.service.tools.spec import Function
from thinkbox.service.tools.store import ToolInfo

from .conftest import Running
from .service_support import program, read_sse, running_server


def run(client: httpx.Client, question: str) -> list[dict[str, Any]]:
    response = client.post("/v1/runs", json={"question": question})
    assert response.status_code == 201, response.text
    with client.stream("GET", f"/v1/runs/{response.json()['id']}/events") as events:
        return read_sse(events)


def harvested(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run's harvest: function -> its outcome; the event comes after the answer, before the end."""
    kinds = [e["event"] for e in events]
    if "tools_harvested" not in kinds:
        return {}
    at = kinds.index("tools_harvested")
    assert kinds[at - 1] == "final_answer" and kinds[at + 1] == "run_finished", kinds
    assert events[at]["data"]["duration_s"] > 0
    return {t["function"]: t for t in events[at]["data"]["tools"]}


def outputs(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["observation"] for e in events if e["event"] == "execution_finished"]


def test_a_function_a_run_defined_and_called_becomes_a_tool_of_the_tenant(running: Running) -> None:
    name = f"vowels_{secrets.token_hex(3)}"
    define = (
        f'def {name}(text):\n    """Count the vowels of a text."""\n'
        '    return sum(c in "aeiou" for c in text.lower())'
    )
    steps = [f"{define}\nprint({name}('Banana'))", f"assert {name}('thinkbox') == 2\nprint('ok')"]
    with (
        running.client(running.alice) as alice,
        running.client(running.bob) as bob,
        running.client(running.carol) as carol,
    ):
        first = run(alice, program(steps, "3"))
        assert first[-1]["data"]["status"] == "answered"
        outcome = harvested(first)[name]
        assert (outcome["outcome"], outcome["version"], outcome["tests"]) == ("saved", 1, 2), outcome
        tool = alice.get(f"/v1/tools/{name}").json()
        assert tool["author"] == "alice" and tool["description"] == "Count the vowels of a text."
        assert tool["source"].strip() == define
        assert f"assert {name}('Banana') == 3" in tool["tests"]
        assert f"assert {name}('thinkbox') == 2" in tool["tests"]

        # another user of the tenant imports it; the run that only imports it harvests nothing
        later = run(bob, program([f"from tools.{name} import {name}\nprint({name}('aeiou'))"], "5"))
        assert outputs(later)[0].startswith("Output:\n5\n"), outputs(later)
        assert harvested(later) == {}

        # the same function defined again: not saved again
        again = run(alice, program(steps, "3"))
        assert harvested(again)[name]["outcome"] == "unchanged"
        assert alice.get(f"/v1/tools/{name}").json()["version"] == 1

        # another tenant sees nothing of it
        assert carol.get(f"/v1/tools/{name}").status_code == 404
        theirs = run(carol, program([f"from tools.{name} import {name}"], "no"))
        assert "ModuleNotFoundError" in outputs(theirs)[0], outputs(theirs)


@pytest.mark.parametrize("running", ["sqlite"], indirect=True)
def test_functions_that_cannot_be_tools_are_not_saved_and_the_event_says_why(running: Running) -> None:
    tag = secrets.token_hex(3)
    scale, doubled = f"scale_{tag}", f"doubled_{tag}"
    steps = [
        # reads a session variable that is not a literal: its tests fail in a fresh session
        f"factor = len('abc')\ndef {scale}(x):\n    return x * factor\nprint({scale}(2))",
        # called with a variable only: no test can be built
        f"def {doubled}(x):\n    return 2 * x\nn = 4\nprint({doubled}(n))",
        # would hide tools.available
        "def available(items):\n    return [i for i in items if i]\nprint(available([0, 1]))",
    ]
    with running.client(running.alice) as alice:
        events = run(alice, program(steps, "6"))
        assert events[-1]["data"]["status"] == "answered"
        found = harvested(events)
        assert found[scale]["outcome"] == "refused" and "NameError" in found[scale]["reason"], found
        assert found[doubled]["outcome"] == "untested", found
        assert found["available"]["outcome"] == "refused" and "tools package" in found["available"]["reason"]
        names = {t["name"] for t in alice.get("/v1/tools").json()["tools"]}
        assert not names & {scale, doubled, "available"}


@pytest.mark.parametrize("running", ["sqlite"], indirect=True)
def test_a_numpy_scalar_result_becomes_a_plain_value_in_the_tests(running: Running) -> None:
    name = f"weekdays_{secrets.token_hex(3)}"
    code = f"import numpy as np\ndef {name}(start, end):\n    return np.busday_count(start, end)\n"
    with running.client(running.alice) as alice:
        events = run(alice, program([code + f"print({name}('2026-03-02', '2026-03-09'))"], "5"))
        assert harvested(events)[name]["outcome"] == "saved", harvested(events)
        tool = alice.get(f"/v1/tools/{name}").json()
        assert tool["source"].startswith("import numpy as np\n")
        assert f"assert {name}('2026-03-02', '2026-03-09') == 5" in tool["tests"]


def test_with_harvest_off_a_run_saves_nothing(tmp_path: Path) -> None:
    name = f"cube_{secrets.token_hex(3)}"
    with running_server(tmp_path, harvest_tools=False) as running, running.client(running.alice) as alice:
        events = run(alice, program([f"def {name}(x):\n    return x ** 3\nprint({name}(3))"], "27"))
        assert events[-1]["data"]["status"] == "answered"
        assert "tools_harvested" not in [e["event"] for e in events]
        assert alice.get("/v1/tools").json()["tools"] == []


def test_a_function_carries_the_imports_constants_and_helpers_it_uses() -> None:
    cells = [
        "import math as m\nfrom datetime import date, timedelta\nRATE = 0.05\nLIMIT = len('ab')\n"
        "def _sq(n):\n    return int(m.sqrt(n))\n"
        "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, _sq(n) + 1))\n"
        "def count_primes(n):\n    return sum(is_prime(k) for k in range(n))\n"
        "print(count_primes(100), is_prime(7))",
        "def test_it():\n    assert count_primes(10) == 4\ntest_it()\n"
        "def tax(x):\n    return x * RATE\ntax(2.0)\ndef noargs():\n    return 1\nnoargs()",
    ]
    found = {c.name: c for c in candidates(cells)}
    # is_prime is inside count_primes' module; test functions and functions without arguments are not tools
    assert sorted(found) == ["count_primes", "tax"]
    primes = found["count_primes"]
    assert primes.source.startswith("import math as m\n\n\ndef count_primes(n):")
    assert "def is_prime(n):" in primes.source and "def _sq(n):" in primes.source
    assert "datetime" not in primes.source and "RATE" not in primes.source
    assert primes.calls == ["count_primes(100)", "count_primes(10)"]
    assert found["tax"].source.startswith("RATE = 0.05\n\n\ndef tax(x):")
    tests, count = build_tests(found["tax"], {"tax(2.0)": "0.1"})
    assert count == 1 and "assert math.isclose(tax(2.0), 0.1" in tests
    tests, count = build_tests(primes, {"count_primes(100)": "25"})
    assert count == 1 and "assert count_primes(100) == 25" in tests and "count_primes(10)" not in tests
    # what the session answers is not trusted: a value that is not a literal never becomes test code
    assert build_tests(primes, {"count_primes(100)": "__import__('os').getcwd()"}) == ("", 0)


def test_the_terminal_shows_what_the_harvest_saved_and_its_time() -> None:
    console = Console(record=True, width=200)
    Renderer(console)(
        ToolsHarvested(
            tools=[
                HarvestedTool(function="count_primes", outcome="saved", version=1, tests=2),
                HarvestedTool(function="scale", outcome="refused", reason="1 of 1 tests failed\n--- trace"),
            ],
            duration_s=2.5,
        )
    )
    text = console.export_text()
    assert "saved as a tool: count_primes (version 1, 2 tests passed)" in text
    assert "scale: refused (1 of 1 tests failed)" in text and "trace" not in text
    assert "tool harvest took 2.5 s" in text


def _tool(name: str, signature: str) -> ToolInfo:
    fields: dict[str, Any] = {"version": 1, "active_version": 1, "description": "", "source": "", "tests": ""}
    fields |= {"packages": [], "secrets": [], "private": False, "author": "alice", "tests_passed": 1}
    return ToolInfo(
        name=name, functions=[Function(name, signature, "")], created_at=1, updated_at=1, **fields
    )


def test_with_the_harvest_on_the_prompt_says_functions_are_saved_after_the_answer() -> None:
    tools = [_tool("loan_payment", "(principal, rate, years)"), _tool("count_primes", "(n)")]
    # with the harvest on, the system prompt says functions are saved after the answer, not how to save_tool
    assert tools_section(tools, "q", 8, harvest=True).endswith(HARVEST_HINT)
