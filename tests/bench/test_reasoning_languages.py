"""The language arms of ``thinkbox bench reasoning``: ``code:js`` really runs JavaScript, ``code:py`` sends
what the ``code`` arm sends, ``code:both`` accepts agreeing answers and asks a third time when they differ,
and the report gives the agreement figures. The scripted model and a real sandbox."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from thinkbox.agent import prompts
from thinkbox.bench.reasoning.languages import HINTS, same_answer
from thinkbox.bench.reasoning.runner import BenchConfig, check_config, load_cache, run_reasoning_bench
from thinkbox.bench.reasoning.tasks import Item, get_family
from thinkbox.config import Settings
from thinkbox.errors import ConfigError
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend

session_loop = pytest.mark.asyncio(loop_scope="session")  # the backend fixture lives in the session's loop


def run_code(code: str) -> dict[str, str]:
    return {"thought": "compute", "action": "execute_code", "code": code, "final_answer": ""}


def give(answer: str) -> dict[str, str]:
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": answer}


def product(item: Item) -> str:
    found = re.search(r"multiplication: ([\d *]+)\.", item.question)
    assert found, item.question
    return found.group(1)


def items(n: int) -> list[Item]:
    return get_family("products").items(n, 7331, 2)


def test_answers_agree_when_the_benchmark_would_read_them_alike() -> None:
    assert same_answer("42319455", "The product is 42,319,455.")
    assert same_answer("Monday", "monday.")
    assert same_answer("Answer: 3.50", "3.5")
    assert not same_answer("42319455", "42319456")
    assert not same_answer("Monday 3", "Friday 3")
    assert not same_answer("42", None) and not same_answer("", "")


def test_the_javascript_arms_refuse_a_family_whose_answer_is_a_python_program() -> None:
    for arm in ("code:js", "code:both"):
        with pytest.raises(ConfigError, match=rf"arm {arm} cannot answer humaneval: .* in py"):
            check_config(BenchConfig(families=["products", "humaneval"], arms=["direct", arm]))
    check_config(BenchConfig(families=["humaneval"], arms=["code:py"]))


@session_loop
async def test_code_js_thinks_in_javascript_and_code_py_as_the_code_arm(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    item = items(1)[0]
    config = BenchConfig(
        families=["products"], n=1, split="test", arms=["code", "code:py", "code:js"], out=tmp_path / "o"
    )
    model = ScriptedModel([
        run_code(f"print({product(item)})"), give(item.expected),  # code
        run_code(f"print({product(item)})"), give(item.expected),  # code:py
        run_code(f"const p = {product(item)}\nconsole.log(String(p))"), give(item.expected),  # code:js
    ])  # fmt: skip
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    code, code_py, js_first, js_second = (model.requests[i] for i in (0, 2, 4, 5))
    assert code.messages[0] == code_py.messages[0]  # the same system prompt and hint
    assert code_py.messages[0]["content"].startswith(prompts.system_prompt(language="py")[:60])
    assert js_first.messages[0]["content"].startswith("You answer questions by thinking in JavaScript")
    assert js_first.messages[0]["content"].endswith(HINTS["js"])
    assert f"Output:\n{item.expected}" in js_second.messages[-1]["content"]  # Node really ran it
    assert all(report.families["products"][a].correct == 1 for a in ("code", "code:py", "code:js"))


def both_script(item: Item, js_answer: str, third: list[Any]) -> list[Any]:
    return [
        run_code(f"print({product(item)})"),
        give(item.expected),
        run_code(f"console.log({product(item)})"),
        give(js_answer),
        *third,
    ]


@session_loop
async def test_code_both_accepts_agreeing_answers_and_asks_again_when_they_disagree(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    first, second, third = items(3)
    config = BenchConfig(families=["products"], n=3, split="test", arms=["code:both"], out=tmp_path / "o")
    model = ScriptedModel([
        *both_script(first, f"The product is {first.expected}.", []),  # agree: two runs
        *both_script(second, "1", [run_code(f"print({product(second)})"), give(second.expected)]),
        *both_script(third, "2", [give("3")]),  # disagree, and the third attempt is wrong
    ])  # fmt: skip
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.remaining == 0
    rows = sorted(load_cache(config.out / "results.jsonl").values(), key=lambda r: r.index)
    assert [r.agreed for r in rows] == [True, False, False]
    assert [r.correct for r in rows] == [True, True, False]
    assert [r.route for r in rows] == ["agree", "disagree>py", "disagree>py"]
    assert [a.answer for a in rows[0].attempts] == [first.expected, f"The product is {first.expected}."]
    assert [(a.language, a.answer, a.correct) for a in rows[1].attempts] == [
        ("py", second.expected, True), ("js", "1", False), ("py", second.expected, True)
    ]  # fmt: skip
    assert [a.steps for a in rows[1].attempts] == [2, 2, 2]
    assert [r.steps for r in rows] == [4, 6, 5]
    third_request = next(r for r in model.requests if "disagree" in r.messages[1]["content"])
    asked = third_request.messages[1]["content"]
    assert f"answered '{second.expected}'" in asked and "answered '1'" in asked
    assert third_request.messages[0]["content"].startswith("You answer questions by thinking in Python")

    stats = report.families["products"]["code:both"]
    assert stats.agreement == pytest.approx(1 / 3, abs=1e-4) and stats.agreed_n == 1
    assert stats.accuracy_agreed == 1.0 and stats.accuracy_disagreed == 0.5
    assert stats.correct == 2 and stats.code_rate == 1.0
    alone = {lang: report.families["products"][f"code:both[{lang}]"] for lang in ("py", "js")}
    assert alone["py"].correct == 3 and alone["js"].correct == 1 and alone["js"].n == 3
    assert alone["py"].mean_steps == 2 and alone["py"].agreement is None
    md = (config.out / "report.md").read_text()
    assert "code:both on products: the languages agreed on 1/3 items (33 %)" in md
    assert "accuracy when they agreed 100 %, when they did not (third attempt) 50 %" in md


@session_loop
async def test_code_both_asks_again_when_one_language_gives_no_answer(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"max_steps": 2})})
    item = items(1)[0]
    config = BenchConfig(families=["products"], n=1, split="test", arms=["code:both"], out=tmp_path / "o")
    stuck = [run_code("console.log(1)"), run_code("console.log(2)")]  # the step limit, no answer
    model = ScriptedModel(
        [run_code(f"print({product(item)})"), give(item.expected), *stuck, give(item.expected)]
    )
    await run_reasoning_bench(config, settings, model=model, backend=backend)

    (row,) = load_cache(config.out / "results.jsonl").values()
    assert row.agreed is False and row.correct
    assert [(a.answer, a.correct, a.stop) for a in row.attempts] == [
        (item.expected, True, "answered"), (None, False, "limit"), (item.expected, True, "answered")
    ]  # fmt: skip
    assert "nothing (it stopped without an answer)" in model.requests[-1].messages[1]["content"]
