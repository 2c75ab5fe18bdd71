"""``thinkbox bench reasoning`` end to end with the scripted model and a real sandbox (zygote, else bwrap;
THINKBOX_TEST_BACKEND picks one): the report's arithmetic on a family where code wins and one where it
loses, resuming after an interruption, and HumanEval completions checked inside the sandbox."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from thinkbox.agent.route import DIRECT_SYSTEM, KIND_SCHEMA
from thinkbox.bench.reasoning.humaneval import HumanEval, problems
from thinkbox.bench.reasoning.runner import (
    BenchConfig,
    SandboxChecker,
    check_config,
    load_cache,
    plan,
    run_reasoning_bench,
)
from thinkbox.bench.reasoning.tasks import Item, get_family
from thinkbox.config import Settings
from thinkbox.models.base import ModelEvent, ModelReply, ModelRequest, Usage
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")
Z = 1.959964


# -- scripted replies: products is a family where the scripted code arm wins, recall one where it loses --
def run_code(code: str) -> dict[str, str]:
    return {"thought": "compute", "action": "execute_code", "code": code, "final_answer": ""}


def give(answer: str) -> dict[str, str]:
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": answer}


def replies_for(item: Item, arm: str) -> list[Any]:
    if item.family == "products":
        match = re.search(r"multiplication: ([\d *]+)\.", item.question)
        assert match, item.question
        code_replies = [run_code(f"print({match.group(1)})"), give(item.expected)]
        if arm == "direct":
            return [item.expected if item.index == 0 else "12345"]  # right once in three
        if arm == "code":
            return code_replies
        return [{"answer_is": "value"}, *code_replies]  # the router runs for real: label, then the loop
    code_replies = [run_code("print('I will look it up')"), give("Atlantis")]  # recall: code loses
    if arm == "direct":
        return [f"{item.expected}."]
    if arm == "code":
        return code_replies
    if item.index == 2:  # the router sends one control question the wrong way
        return [{"answer_is": "value"}, *code_replies]
    # a value; the loop's first action answers without code, so the direct route answers instead
    return [{"answer_is": "value"}, give("Atlantis"), f"{item.expected}."]


def script(config: BenchConfig, skip: set[str] | None = None) -> list[Any]:
    """The replies in the order the runner asks for them, less those of cached runs (``skip``: their keys;
    the agent fingerprint, a key's last part, is left out of the comparison)."""
    replies: list[Any] = []
    done = {k.rpartition("/")[0] for k in skip or set()}
    for _family, item, arm, key in plan(config, check_config(config), "scripted", "agent"):
        if key.rpartition("/")[0] not in done:
            replies.extend(replies_for(item, arm))
    return replies


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


async def test_report_shows_code_winning_on_computation_and_losing_on_a_control(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(
        families=["products", "recall"],
        n=3,
        arms=["direct", "code", "router"],
        router="auto",
        out=tmp_path / "o",
    )
    model = ScriptedModel(script(config))
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.remaining == 0
    products, recall = report.families["products"], report.families["recall"]
    assert [products[a].correct for a in ("direct", "code", "router")] == [1, 3, 3]
    assert [recall[a].correct for a in ("direct", "code", "router")] == [3, 0, 2]
    assert products["direct"].accuracy == pytest.approx(1 / 3, abs=1e-4)
    assert (products["direct"].ci_low, products["direct"].ci_high) == pytest.approx(
        wilson_by_hand(1, 3), abs=1e-4
    )
    assert (
        products["code"].ci_low == pytest.approx(3 / (3 + Z * Z), abs=1e-4)
        and products["code"].ci_high == 1.0
    )
    assert recall["code"].ci_low == 0.0 and recall["code"].ci_high == pytest.approx(
        Z * Z / (3 + Z * Z), abs=1e-4
    )
    # code use, steps: direct is one call; code runs code then answers; the router adds its classification
    assert [products[a].code_rate for a in ("direct", "code", "router")] == [0.0, 1.0, 1.0]
    assert recall["router"].code_rate == pytest.approx(1 / 3, abs=1e-4)
    assert [products[a].mean_steps for a in ("direct", "code", "router")] == [1.0, 2.0, 2.0]
    assert recall["router"].mean_steps == 2.0  # step 1's answer, then the direct one (or two code steps)
    assert products["router"].route_tokens and products["router"].route_tokens > 0
    assert products["direct"].route_tokens is None
    assert all(s.mean_tokens > 0 for s in (*products.values(), *recall.values()))
    assert products["code"].mean_s > products["direct"].mean_s >= 0  # the code arm starts a sandbox session
    # summary: code - direct over computation families only; the router's worst shortfall is on recall
    assert report.summary.code_minus_direct_pp == pytest.approx(200 / 3, abs=0.01)
    assert report.summary.router_worst_gap_pp == pytest.approx(100 / 3, abs=0.01)
    assert report.summary.router_worst_family == "recall"
    assert report.summary.perfect_router_by_family == {"products": 1.0, "recall": 1.0}

    # the direct arm had no tools; the router's classification was constrained; the code really ran
    first_direct = model.requests[0]
    assert first_direct.json_schema is None and "12345" not in first_direct.messages[-1]["content"]
    assert any(r.json_schema == KIND_SCHEMA for r in model.requests)
    lines = [json.loads(x) for x in (config.out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 18
    code_product = next(x for x in lines if x["family"] == "products" and x["arm"] == "code")
    assert code_product["steps"] == 2 and code_product["code_ran"] and code_product["correct"]
    observed = " ".join(m["content"] for r in model.requests for m in r.messages if m["role"] == "user")
    a, b = re.findall(r"multiplication: (\d+) \* (\d+)\.", code_product["question"])[0]
    assert f"Output:\n{int(a) * int(b)}" in observed

    data = json.loads((config.out / "report.json").read_text())
    assert set(data["families"]["products"]["code"]) >= {"accuracy", "n", "code_rate", "mean_steps", "mean_s"}
    assert set(data["summary"]) >= {"code_minus_direct_pp", "router_worst_gap_pp"}
    assert (config.out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (config.out / "report.md").read_text()
    assert "| products | compute | code | 100 | 44-100 | 3 | 100 |" in md
    assert "+66.7 points" in md and "+33.3 points (recall)" in md


async def test_an_interrupted_run_resumes_from_its_cached_items(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["products"], n=4, arms=["direct", "code"], out=tmp_path / "o")
    results = config.out / "results.jsonl"
    slow = ScriptedModel(script(config), delay_s=0.02)
    written: list[str] = []
    three = asyncio.Event()

    def progress(message: str) -> None:
        written.extend([message] if message.startswith("[") else [])
        if len(written) >= 3:
            three.set()

    task = asyncio.create_task(
        run_reasoning_bench(config, settings, model=slow, backend=backend, progress=progress)
    )
    async with asyncio.timeout(60):
        await three.wait()
    task.cancel()  # as Ctrl-C would, halfway
    with pytest.raises(asyncio.CancelledError):
        await task
    with results.open("a") as f:
        f.write('{"key": "products/d2/code/s0/3/scri')  # a line cut short by a kill
    cached = {json.loads(line)["key"] for line in results.read_text().splitlines()[:-1]}
    assert 3 <= len(cached) < 8

    rest = ScriptedModel(script(config, skip=cached))
    report = await run_reasoning_bench(config, settings, model=rest, backend=backend)

    assert rest.remaining == 0 and len(rest.requests) < len(script(config))
    assert report.families["products"]["direct"].n == 4 and report.families["products"]["code"].n == 4
    assert report.families["products"]["code"].correct == 4
    assert len(load_cache(results)) == 8


# -- HumanEval: completions run inside the sandbox --------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def checker(backend: SandboxBackend) -> AsyncIterator[SandboxChecker]:
    pool = SessionPool(backend, size=1, config=SessionConfig(limits=Limits(timeout_s=10.0, kill_grace_s=1.0)))
    await pool.start()
    try:
        yield SandboxChecker(pool)
    finally:
        await pool.aclose()


def humaneval_item(task: str = "HumanEval/0") -> Item:
    problem = next(p for p in problems() if p["task_id"] == task)
    return Item(family="humaneval", index=0, question=problem["prompt"], expected=task, data=problem)


async def test_a_correct_humaneval_completion_passes_in_the_sandbox(checker: SandboxChecker) -> None:
    item = humaneval_item()
    family = HumanEval()
    assert await family.score(item, item.data["prompt"] + item.data["canonical_solution"], checker)
    body_only = f"```python\n{item.data['canonical_solution']}```"
    assert await family.score(item, body_only, checker)


async def test_a_wrong_humaneval_completion_fails(checker: SandboxChecker) -> None:
    item = humaneval_item()
    assert not await HumanEval().score(item, "    return False\n", checker)
    assert not await HumanEval().score(item, "def has_close_elements(:\n", checker)


async def test_an_endless_humaneval_completion_times_out(checker: SandboxChecker) -> None:
    item = humaneval_item()
    started = time.monotonic()
    assert not await HumanEval(timeout_s=1.5).score(item, "    while True:\n        pass\n", checker)
    assert time.monotonic() - started < 15


async def test_humaneval_completions_never_touch_the_host(checker: SandboxChecker) -> None:
    item = humaneval_item()
    marker = Path(f"/tmp/thinkbox-humaneval-{uuid.uuid4().hex}")
    pid = os.getpid()
    answer = (
        "import os\n"
        f"open({str(marker)!r}, 'w').write('escaped')\n"
        f"assert os.getpid() != {pid}\n" + item.data["prompt"] + item.data["canonical_solution"]
    )
    assert await HumanEval().score(item, answer, checker)  # it ran, and passed, somewhere else
    assert not await asyncio.to_thread(marker.exists)


async def test_a_code_arm_that_answers_with_a_tested_value_is_scored_on_the_function_in_its_session(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["humaneval"], n=2, arms=["direct", "code"], out=tmp_path / "o")
    first, second = HumanEval().items(2, 0, 2)
    solution = [item.data["prompt"] + item.data["canonical_solution"] for item in (first, second)]
    model = ScriptedModel(
        [
            "    return None\n",  # direct, first item: wrong
            solution[1],  # direct, second item: right
            run_code(solution[0]),  # code, first item: defines the function, tests it, answers the value
            run_code("print('tested')"),
            give("[1, 2, 3]"),
            run_code(solution[1]),  # code, second item: answers with the function itself
            give(solution[1]),
        ]
    )
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    rows = {(r.arm, r.index): r for r in load_cache(config.out / "results.jsonl").values()}
    taken = rows[("code", 0)]
    assert taken.from_session and taken.correct
    assert f"def {first.data['entry_point']}(" in (taken.answer or "") and "[1, 2, 3]" not in (
        taken.answer or ""
    )
    assert (
        not rows[("code", 1)].from_session and (rows[("code", 1)].answer or "").strip() == solution[1].strip()
    )
    assert report.families["humaneval"]["code"].correct == 2
    assert report.families["humaneval"]["direct"].correct == 1
    assert report.families["humaneval"]["code"].from_session == 1
    assert "humaneval code 1/2" in (config.out / "report.md").read_text()


async def test_a_wrong_function_left_in_the_session_is_scored_wrong(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["humaneval"], n=1, arms=["code"], out=tmp_path / "o")
    item = HumanEval().items(1, 0, 2)[0]
    wrong = f"def {item.data['entry_point']}(*args):\n    return None"
    model = ScriptedModel([run_code(wrong), give("None")])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    (row,) = load_cache(config.out / "results.jsonl").values()
    assert row.from_session and "return None" in (row.answer or "") and not row.correct
    assert report.families["humaneval"]["code"].correct == 0


class ReadingModel:
    """A model that reads its prompt (so the order of requests does not matter): it answers the direct arm
    with 0 and, as the agent, prints the product in code, then answers with the printed value. It counts
    how many requests it serves at once."""

    name = "reading"

    def __init__(self) -> None:
        self.busy = self.most_busy = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(0.05)
            last = request.messages[-1]["content"]
            if request.json_schema is None:
                text = "0"
            elif printed := re.search(r"Output:\n(-?\d+)", last):
                text = json.dumps(give(printed.group(1)))
            else:
                expr = re.search(r"multiplication: ([\d *]+)\.", last)
                assert expr, last
                text = json.dumps(run_code(f"print({expr.group(1)})"))
            yield ModelReply(text=text, usage=Usage(10, 5))
        finally:
            self.busy -= 1


async def test_jobs_run_in_parallel_against_a_model_that_allows_it(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["products"], n=4, arms=["direct", "code"], jobs=3, out=tmp_path / "o")
    model = ReadingModel()
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.most_busy > 1
    assert report.families["products"]["code"].correct == 4
    assert report.families["products"]["direct"].correct == 0
    assert len(load_cache(config.out / "results.jsonl")) == 8


async def test_the_csv_is_in_the_code_arms_workspace_and_inlined_for_the_direct_arm(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["csv_stats"], n=1, arms=["direct", "code"], out=tmp_path / "o")
    item = get_family("csv_stats").items(1, 0, 2)[0]
    read = "import pandas as pd\nprint(len(pd.read_csv('sales.csv')))"
    model = ScriptedModel(["0", run_code(read), give(item.expected)])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    direct_prompt = model.requests[0].messages[-1]["content"]
    assert "Contents of sales.csv:\nregion,product,units,price\n" in direct_prompt
    agent_system = model.requests[1].messages[0]["content"]
    assert "sales.csv" in agent_system and "Contents of" not in model.requests[1].messages[1]["content"]
    assert "Output:\n60" in model.requests[2].messages[-1]["content"]
    assert report.families["csv_stats"]["code"].correct == 1


async def test_the_router_runs_the_product_route_for_real_and_reports_its_decision_cost(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["products"], n=1, arms=["direct", "code", "router"], out=tmp_path / "o")
    item = get_family("products").items(1, 0, 2)[0]
    model = ScriptedModel(
        [*replies_for(item, "direct"), *replies_for(item, "code"), *replies_for(item, "router")]
    )
    await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.remaining == 0 and len(model.requests) == 6  # nothing reused: the router asked 3 times
    label = model.requests[3]
    assert label.json_schema == KIND_SCHEMA and item.question in label.messages[-1]["content"]
    row = next(r for r in load_cache(config.out / "results.jsonl").values() if r.arm == "router")
    assert row.route == "code" and row.correct and row.route_tokens > 0 and row.route_s >= 0
    assert row.key.startswith("products/d2/router:auto/")
    assert "the router's own decisions per item" in (config.out / "report.md").read_text()


async def test_the_router_answers_directly_when_step_one_answers_without_code(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    config = BenchConfig(families=["recall"], n=1, arms=["router"], out=tmp_path / "o")
    item = get_family("recall").items(1, 0, 2)[0]
    model = ScriptedModel([{"answer_is": "value"}, give("not the direct answer"), item.expected])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.remaining == 0
    assert model.requests[2].messages[0]["content"] == DIRECT_SYSTEM
    stats = report.families["recall"]["router"]
    assert stats.correct == 1 and stats.code_rate == 0.0 and stats.mean_steps == 2
    row = next(iter(load_cache(config.out / "results.jsonl").values()))
    assert row.route == "direct"


async def test_the_router_gives_a_direct_answer_when_the_code_route_stops_at_a_limit(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"max_steps": 1})})
    config = BenchConfig(families=["products"], n=1, arms=["router"], out=tmp_path / "o")
    item = get_family("products").items(1, 0, 2)[0]
    model = ScriptedModel([{"answer_is": "value"}, run_code("x = 1"), item.expected])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    assert model.remaining == 0
    stats = report.families["products"]["router"]
    assert stats.correct == 1 and stats.code_rate == 1.0 and stats.mean_steps == 2
    row = next(iter(load_cache(config.out / "results.jsonl").values()))
    assert row.route == "code>direct" and row.answer == item.expected


async def test_the_router_writes_a_program_directly_and_a_fallback_is_not_taken_from_the_session(
    backend: SandboxBackend, settings: Settings, tmp_path: Path
) -> None:
    item = HumanEval().items(1, 0, 2)[0]
    solution = item.data["prompt"] + item.data["canonical_solution"]
    config = BenchConfig(families=["humaneval"], n=1, arms=["router"], out=tmp_path / "p")
    model = ScriptedModel([{"answer_is": "program"}, solution])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)
    assert model.remaining == 0
    assert report.families["humaneval"]["router"].correct == 1
    assert report.families["humaneval"]["router"].code_rate == 0.0

    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"max_steps": 1})})
    wrong = run_code(f"def {item.data['entry_point']}(*args):\n    return None")
    config = BenchConfig(families=["humaneval"], n=1, arms=["router"], out=tmp_path / "v")
    model = ScriptedModel([{"answer_is": "value"}, wrong, solution])
    await run_reasoning_bench(config, settings, model=model, backend=backend)
    row = next(iter(load_cache(config.out / "results.jsonl").values()))
    assert row.route == "code>direct" and row.correct and not row.from_session
