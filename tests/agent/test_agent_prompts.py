"""What the model is told: the system prompt and the observations of executions."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from thinkbox.agent.parse import parse_action
from thinkbox.agent.prompts import (
    NETWORK,
    assigned_names,
    cut_middle,
    defined_names,
    looks_intermediate,
    observation,
    peek_code,
    system_prompt,
)
from thinkbox.agent.reply_format import system_prompt as formatted_prompt
from thinkbox.sandbox.types import ExecutionError, ExecutionResult, FileInfo


def test_system_prompt_lists_workspace_files_but_not_hidden_ones() -> None:
    files = [
        FileInfo(path="transactions.xlsx", size=5300, is_dir=False),
        FileInfo(path="data", size=0, is_dir=True),
        FileInfo(path="data/b.csv", size=12, is_dir=False),
        FileInfo(path=".config/matplotlib/x", size=1, is_dir=False),
    ]
    prompt = system_prompt(files)
    assert "Files in /workspace: transactions.xlsx (5.2 KB), data/b.csv (12 B)." in prompt
    assert ".config" not in prompt
    assert "The workspace has no files." in system_prompt([])


def test_system_prompt_is_compact_and_teaches_the_loop() -> None:
    prompt = system_prompt([])
    assert len(prompt) < 2100  # ~500 tokens of Qwen2.5: ~3.3 s of prompt processing on 2 cores
    for needed in ("numpy, pandas, matplotlib, openpyxl", "print()", "debug_error", "well-known facts"):
        assert needed in prompt
    # Every example reply in the prompt is itself a valid action, in the constrained form.
    replies = [line for line in prompt.splitlines() if line.startswith('{"thought"') and '"..."' not in line]
    actions = [parse_action(line).action.action for line in replies]
    assert actions == ["execute_code", "debug_error", "provide_answer", "provide_answer"]
    assert all(parse_action(line).repairs == () for line in replies)
    assert all(set(json.loads(line)) == {"thought", "action", "code", "final_answer"} for line in replies)


def test_observation_of_output_value_and_success() -> None:
    text = observation(ExecutionResult(stdout="6386.41\n", result="6386.41"), max_chars=1000, timeout_s=30)
    assert text.startswith("Output:\n6386.41\nValue: 6386.41\n")
    assert "provide_answer" in text


def test_observation_of_an_error_ends_with_the_exception_line() -> None:
    error = ExecutionError(
        type="NameError",
        message="name 'x' is not defined",
        traceback='Traceback (most recent call last):\n  File "<cell-1>", line 1\n'
        "NameError: name 'x' is not defined\n",
    )
    text = observation(ExecutionResult(error=error), max_chars=1000, timeout_s=30)
    assert text.endswith("NameError: name 'x' is not defined")
    assert "provide_answer" not in text


def test_observation_when_nothing_was_printed_asks_for_print_and_not_for_an_answer() -> None:
    text = observation(ExecutionResult(), max_chars=1000, timeout_s=30)
    assert "print() the values you need" in text
    assert "provide_answer" not in text


def test_observation_shows_what_the_last_line_assigned_when_nothing_was_printed() -> None:
    text = observation(ExecutionResult(), max_chars=1000, timeout_s=30, assigned="result = 386064\n")
    assert "result = 386064" in text and "provide_answer" in text
    assert "print() the values" not in text


def test_a_nested_value_read_back_is_shown_as_intermediate_not_as_an_answer() -> None:
    grid = "grid = " + repr([["X", "O", "O", "#"], ["O", "O", "X", "*"], ["O", "X", "O", "O"]])
    text = observation(ExecutionResult(), max_chars=1000, timeout_s=30, assigned=grid + "\nn = 3\n")
    assert grid in text and "intermediate value" in text and "provide_answer" not in text


@pytest.mark.parametrize(
    ("assigned", "intermediate"),
    [
        ("result = 386064", False),
        ("ordered = [-3.5, 1.25, 7.0, 12.5, 40.0, 41.75, 99.0, 120.5, 300.25]", False),
        ("word = 'strawberry'\ncount = 3", False),
        ("grid = [['X', 'O'], ['O', '#']]", True),
        ("edges = [('A', 'B', 4), ('B', 'C', 1)]", True),
        ("df =    a  b\n0  1  2\n1  3  4", True),
    ],
)
def test_working_data_read_back_is_told_apart_from_an_answer(assigned: str, intermediate: bool) -> None:
    assert looks_intermediate(assigned) is intermediate


@pytest.mark.parametrize(
    ("code", "names"),
    [
        ("result = 504 * 766", ["result"]),
        ("import math\na, b = 1, 2", ["a", "b"]),
        ("n = 0\nn += 1", ["n"]),
        ("x: int = 3", ["x"]),
        ("x = y = 2", ["x", "y"]),
        ("print(1)", []),
        ("d['k'] = 1", []),
        ("x = 1\nprint(x)", []),
        ("def f(:", []),
        ("", []),
    ],
)
def test_assigned_names_are_the_plain_targets_of_the_last_statement(code: str, names: list[str]) -> None:
    assert assigned_names(code) == names


@pytest.mark.parametrize(
    ("code", "names"),
    [
        ("def f(x):\n    return x", ["f"]),
        ("import math\ndef is_prime(n):\n    return n > 1\nclass Box:\n    pass", ["is_prime", "Box"]),
        ("async def go():\n    pass", ["go"]),
        ("def f(x):\n    return x\nprint(f(2))", []),  # ends with a call: its output is the observation
        ("x = 1", []),
        ("def f(:", []),
    ],
)
def test_defined_names_are_the_definitions_of_code_that_ends_with_one(code: str, names: list[str]) -> None:
    assert defined_names(code) == names


def test_observation_of_a_silent_definition_names_it_and_asks_for_a_test_not_an_answer() -> None:
    text = observation(ExecutionResult(), max_chars=1000, timeout_s=30, defined=["solve", "helper"])
    assert "defined: solve, helper" in text and "Test it" in text
    assert "provide_answer" not in text
    printed = observation(ExecutionResult(stdout="4\n"), max_chars=1000, timeout_s=30, defined=["solve"])
    assert "defined" not in printed and "provide_answer" in printed  # output wins: it is what was seen


def test_peek_code_prints_each_value_cut_and_defines_nothing() -> None:
    namespace: dict[str, object] = {"a": 1, "b": "x" * 1000}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(peek_code(["a", "b"], width=20), namespace)
    assert out.getvalue() == "a = 1\nb = " + repr("x" * 1000)[:20] + "\n"
    assert set(namespace) == {"a", "b", "__builtins__"}


def test_observation_says_whether_state_survived_a_timeout() -> None:
    interrupted = observation(ExecutionResult(timed_out=True, interrupted=True), max_chars=1000, timeout_s=5)
    assert "longer than the 5 s time limit and was interrupted" in interrupted and "are kept" in interrupted
    killed = ExecutionResult(timed_out=True, killed=True, state_survived=False)
    text = observation(killed, max_chars=1000, timeout_s=5, restarted=True)
    assert "killed after the 5 s time limit" in text and "lost" in text and "fresh interpreter" in text


def test_cut_middle_keeps_head_and_tail_with_a_marker() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    cut = cut_middle(text, 300)
    assert len(cut) <= 300
    assert cut.startswith("line 0\n") and cut.endswith("line 999\n")
    assert "characters cut here" in cut
    assert cut_middle("short", 300) == "short"


def test_a_session_with_the_egress_proxy_is_not_told_there_is_no_internet() -> None:
    for language in ("py", "js", "sh", "auto"):
        offline = system_prompt(language=language)
        online = system_prompt(language=language, network=True)
        assert "no internet" in offline.lower()
        assert "no internet" not in online.lower() and "through a proxy" in online, language
    assert NETWORK in system_prompt(network=True)  # Python sessions: !pip install is explained


def test_the_python_prompt_says_a_line_starting_with_bang_runs_a_shell_command() -> None:
    for reply_format in ("json", "fenced"):
        prompt = formatted_prompt(language="py", reply_format=reply_format)
        assert "A code line starting with ! runs as a shell command" in prompt, reply_format
    online = system_prompt(network=True)
    assert online.count("starting with !") == 1 and "!pip install NAME" in online  # said once, pip beside it
    for language in ("js", "sh"):  # their sessions run no ! lines
        assert "starting with !" not in system_prompt(language=language)
