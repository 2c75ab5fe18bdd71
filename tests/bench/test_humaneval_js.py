"""``humaneval_js``: JavaScript answers to HumanEval problems, checked by the dataset's own Python tests
through a node process, in a real sandbox session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from thinkbox.bench.reasoning.arms import Outcome, answer_from_session
from thinkbox.bench.reasoning.humaneval import problems
from thinkbox.bench.reasoning.humaneval_js import HumanEvalJs, defines, extract_code, program, session_source
from thinkbox.bench.reasoning.runner import SandboxChecker
from thinkbox.bench.reasoning.tasks import Item, get_family
from thinkbox.sandbox import registry
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.types import Limits, SessionConfig

CLOSE = """function has_close_elements(numbers, threshold) {
  for (let i = 0; i < numbers.length; i++)
    for (let j = i + 1; j < numbers.length; j++)
      if (Math.abs(numbers[i] - numbers[j]) < threshold) return true;
  return false;
}"""
SUM_PRODUCT = """const sum_product = (numbers) =>
  [numbers.reduce((a, b) => a + b, 0), numbers.reduce((a, b) => a * b, 1)];"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def checker() -> AsyncIterator[SandboxChecker]:
    backend = registry.create_backend("zygote")
    await backend.start()
    pool = SessionPool(backend, size=1, config=SessionConfig(limits=Limits(timeout_s=20.0, kill_grace_s=1.0)))
    await pool.start()
    try:
        yield SandboxChecker(pool)
    finally:
        await pool.aclose()
        await backend.aclose()


def item(task: str) -> Item:
    family = HumanEvalJs()
    problem = next(p for p in problems() if p["task_id"] == task)
    return Item(family=family.name, index=0, question="", expected=task, data=problem)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_correct_javascript_function_passes_the_python_tests(checker: SandboxChecker) -> None:
    assert await HumanEvalJs().score(
        item("HumanEval/0"), f"Here it is:\n```javascript\n{CLOSE}\n```", checker
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_an_array_stands_for_a_tuple_where_the_reference_returns_one(checker: SandboxChecker) -> None:
    assert await HumanEvalJs().score(item("HumanEval/8"), SUM_PRODUCT, checker)


@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_missing_broken_and_endless_functions_fail(checker: SandboxChecker) -> None:
    close = item("HumanEval/0")
    family = HumanEvalJs(timeout_s=5.0)
    assert not await family.score(close, CLOSE.replace("< threshold", "<= threshold * 0"), checker)
    assert not await family.score(close, "function other(x) { return true; }", checker)
    assert not await family.score(
        close, "function has_close_elements(numbers, threshold) { return (; }", checker
    )
    endless = "function has_close_elements(numbers, threshold) { while (true) {} }"
    assert not await family.score(close, endless, checker)
    assert not await family.score(close, "", checker)


def test_the_family_asks_for_javascript_and_draws_humanevals_items() -> None:
    family = get_family("humaneval_js")
    items = family.items(3, seed=0, difficulty=2)
    python = get_family("humaneval").items(3, seed=0, difficulty=2)
    assert [i.expected for i in items] == [i.expected for i in python]
    assert all(
        "JavaScript function named" in i.question and i.data["entry_point"] in i.question for i in items
    )
    assert extract_code("```js\nconst a = 1;\n```") == "const a = 1;"
    assert "check(candidate)" in program(items[0].data, "function f() {}")


@pytest.mark.asyncio(loop_scope="module")
async def test_the_functions_of_a_javascript_agent_are_read_from_its_javascript_interpreter(
    checker: SandboxChecker,
) -> None:
    """The code:js agent defines the function in the session's JavaScript interpreter and answers with a
    value: the session's answer is read there (not by running the JavaScript snippet as Python)."""
    family = HumanEvalJs()
    entry = "has_close_elements"
    data = item("HumanEval/0").data
    first = Item(family=family.name, index=0, question="", expected="HumanEval/0", data=data,
                 session_answer=session_source(entry), answer_pattern=defines(entry))  # fmt: skip
    async with checker.pool.lease() as session:
        defined = await session.execute(CLOSE, language="js")
        assert defined.ok, defined.error
        outcome = Outcome(answer="true")
        await answer_from_session(first, session, outcome, "js")
    assert outcome.from_session and "function has_close_elements" in outcome.answer, outcome
    assert await family.score(first, outcome.answer, checker)
