"""The code arm under agent.decompose runs the decomposed agent (plan, tested parts, composition), with the
scripted model and a real sandbox, and its settings are part of the agent's fingerprint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from thinkbox.agent.decompose import PLAN_SCHEMA
from thinkbox.bench.reasoning.runner import BenchConfig, load_cache, run_reasoning_bench
from thinkbox.bench.reasoning.tasks import get_family
from thinkbox.config import Settings
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend

pytestmark = pytest.mark.asyncio(loop_scope="session")


def run_code(code: str) -> dict[str, str]:
    return {"thought": "compute", "action": "execute_code", "code": code, "final_answer": ""}


def give(answer: str) -> dict[str, str]:
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": answer}


async def test_the_code_arm_plans_tests_and_composes_under_agent_decompose(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    item = get_family("products").items(1, 0, 2)[0]
    factors = re.search(r"multiplication: ([\d *]+)\.", item.question)
    assert factors, item.question
    part = {"name": "mul", "signature": "def mul(a: int, b: int) -> int", "contract": "the product",
            "test": "assert mul(3, 4) == 12"}  # fmt: skip
    model = ScriptedModel([
        {"parts": [part], "compose": "mul of the factors"},
        run_code("def mul(a, b):\n    return a * b"), give("done"),
        run_code(f"print({factors.group(1)})"), give(item.expected),
    ])  # fmt: skip
    decomposed = settings.model_copy(
        update={"agent": settings.agent.model_copy(update={"decompose": "chain"})}
    )
    config = BenchConfig(families=["products"], n=1, arms=["code"], out=tmp_path / "o")
    report = await run_reasoning_bench(config, decomposed, model=model, backend=backend)

    assert model.requests[0].json_schema == PLAN_SCHEMA
    (row,) = load_cache(config.out / "results.jsonl").values()
    assert row.correct and row.steps == 5  # the plan call, two steps for the part, two to compose
    assert report.families["products"]["code"].correct == 1
    plain = ScriptedModel([run_code(f"print({factors.group(1)})"), give(item.expected)])
    await run_reasoning_bench(config, settings, model=plain, backend=backend)
    assert len(load_cache(config.out / "results.jsonl")) == 2  # another fingerprint: not taken from the cache
