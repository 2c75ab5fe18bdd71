"""Held-out evaluation in ``thinkbox bench reasoning``: the dev and test splits draw different items, the
agent's fingerprint keys every cached result (a changed prompt or parameter is asked again, never mixed),
the ``cot`` and ``direct`` arms answer in text with their own budgets, and no product prompt holds a
benchmark item. The scripted model and a real sandbox (THINKBOX_TEST_BACKEND, else zygote, else bwrap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinkbox.agent import prompts
from thinkbox.bench.reasoning import arms, controls
from thinkbox.bench.reasoning.humaneval import HumanEval, split_problems
from thinkbox.bench.reasoning.runner import BenchConfig, fingerprint, load_cache, run_reasoning_bench
from thinkbox.bench.reasoning.tasks import SPLITS, final_line_answer, get_family
from thinkbox.config import Settings
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend

session_loop = pytest.mark.asyncio(loop_scope="session")  # the backend fixture lives in the session's loop


def test_the_splits_draw_different_items_from_every_kind_of_family() -> None:
    assert SPLITS == {"dev": 0, "test": 7331}
    for name in ("products", "gsm_symbolic", "calendar_arithmetic", "tsp", "csv_stats"):
        family = get_family(name)
        dev = {(i.question, str(i.files)) for i in family.items(5, SPLITS["dev"], 2)}
        test = {(i.question, str(i.files)) for i in family.items(5, SPLITS["test"], 2)}
        assert dev.isdisjoint(test), name
    dev_tasks = {p["task_id"] for p in split_problems("dev")}
    test_tasks = {p["task_id"] for p in split_problems("test")}
    assert dev_tasks.isdisjoint(test_tasks) and len(dev_tasks) + len(test_tasks) == 164
    for level in (1, 2, 3):  # every HumanEval item of a split comes from that split's half
        assert {i.expected for i in HumanEval().items(20, SPLITS["test"], level)} <= test_tasks
        assert {i.expected for i in HumanEval().items(20, SPLITS["dev"], level)} <= dev_tasks


def test_the_split_picks_the_seed_unless_a_seed_is_given() -> None:
    assert BenchConfig().item_seed == 0 and BenchConfig(split="test").item_seed == 7331
    assert BenchConfig(split="test", seed=5).item_seed == 5


def test_no_product_prompt_holds_a_benchmark_item_or_a_question_specific_hint() -> None:
    texts = [prompts.system_prompt(language=lang) for lang in ("py", "js", "sh", "auto")]
    texts += [prompts.ACTION_TEMPLATE, arms.CODE_HINT, arms.DIRECT_SYSTEM, arms.COT_SYSTEM]
    facts = [q for level in (*controls.RECALL, *controls.WORDING) for q, _ in level]
    for text in texts:
        assert "shortest_path_length" not in text and 'weight="weight"' not in text
        for question in facts:
            assert question not in text, question
        for name in ("products", "gsm_symbolic", "calendar_arithmetic"):
            for seed in SPLITS.values():
                assert all(i.question not in text for i in get_family(name).items(5, seed, 2))


def test_an_answer_line_is_read_from_a_reply_in_text() -> None:
    assert final_line_answer("12 * 3 = 36\n36 + 4 = 40\nAnswer: 40") == "40"
    assert final_line_answer("First, Answer: 3 is wrong.\n**Final answer:** Monday") == "Monday"
    assert final_line_answer("40") == "40"
    assert final_line_answer("9 * 5 = 45, so the product is \\(\\boxed{45}\\).") == "45"


def test_the_fingerprint_changes_with_prompts_parameters_and_model(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = fingerprint(settings, "m")
    assert base == fingerprint(settings, "m")
    assert base["model"]["temperature"] == 0.0 and base["source_sha"] and base["thinkbox_version"]
    assert "system.py" in base["prompts_sha"] and "arms.COT_SYSTEM" in base["prompts_sha"]
    hotter = settings.model_copy(update={"model": settings.model.model_copy(update={"temperature": 0.5})})
    longer = settings.model_copy(update={"model": settings.model.model_copy(update={"max_tokens": 2048})})
    other_file = settings.model_copy(
        update={"model": settings.model.model_copy(update={"path": Path("/elsewhere/model.gguf")})}
    )
    ids = {base["id"], fingerprint(hotter, "m")["id"], fingerprint(longer, "m")["id"]}
    ids |= {fingerprint(other_file, "m")["id"], fingerprint(settings, "another model")["id"]}
    monkeypatch.setattr(arms, "COT_SYSTEM", arms.COT_SYSTEM + " Be brief.")
    changed = fingerprint(settings, "m")
    assert changed["prompts_sha"]["arms.COT_SYSTEM"] != base["prompts_sha"]["arms.COT_SYSTEM"]
    assert len(ids | {changed["id"]}) == 6
    from thinkbox.bench.reasoning import fingerprint as fingerprint_module

    monkeypatch.setattr(fingerprint_module, "git_commit", lambda: "0123456789ab")
    recommitted = fingerprint(settings, "m")  # a commit of docs or tests changes no answer
    assert recommitted["git_commit"] == "0123456789ab" and recommitted["id"] == changed["id"]


def test_the_source_hash_covers_the_code_that_answers_not_the_report(tmp_path: Path) -> None:
    import shutil

    import thinkbox
    from thinkbox.bench.reasoning.fingerprint import source_hash

    copy = tmp_path / "thinkbox"
    shutil.copytree(Path(thinkbox.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = source_hash(copy)
    for described in ("bench/reasoning/report.py", "config.py", "service/runs.py"):
        (copy / described).write_text((copy / described).read_text() + "\n# reworded\n")
    assert source_hash(copy) == base  # how results are written, other settings: the same answers
    (copy / "agent/prompts.py").write_text((copy / "agent/prompts.py").read_text() + "\n# changed\n")
    assert source_hash(copy) != base


@session_loop
async def test_the_cot_and_direct_arms_answer_in_text_within_their_budgets(
    backend: SandboxBackend,
    settings: Settings,
    tmp_path: Path,
) -> None:
    config = BenchConfig(families=["products"], n=1, split="test", arms=["direct", "cot"], out=tmp_path / "o")
    item = get_family("products").items(1, 7331, 2)[0]
    steps = f"Step 1: ...\nStep 2: ...\nAnswer: {item.expected}"
    model = ScriptedModel(["It is about 5000.\nAnswer: 5000", steps])
    report = await run_reasoning_bench(config, settings, model=model, backend=backend)

    direct, cot = model.requests
    assert direct.json_schema is None and cot.json_schema is None
    assert direct.messages[0]["content"] == arms.DIRECT_SYSTEM
    assert cot.messages[0]["content"] == arms.COT_SYSTEM
    assert direct.max_tokens == min(settings.model.max_tokens, item.answer_tokens)
    assert cot.max_tokens == settings.model.max_tokens  # the budget of one agent step
    by_arm = report.families["products"]
    assert by_arm["direct"].correct == 0 and by_arm["cot"].correct == 1
    rows = {r.arm: r for r in load_cache(config.out / "results.jsonl").values()}
    assert rows["cot"].answer == item.expected and (rows["cot"].reply or "").startswith("Step 1")
    assert rows["direct"].answer == "5000"


@session_loop
async def test_the_report_names_the_split_the_seed_and_the_agent(
    backend: SandboxBackend,
    settings: Settings,
    tmp_path: Path,
) -> None:
    config = BenchConfig(families=["products"], n=2, split="test", arms=["direct"], out=tmp_path / "o")
    model = ScriptedModel(["Answer: 1", "Answer: 2"])
    await run_reasoning_bench(config, settings, model=model, backend=backend)

    data = json.loads((config.out / "report.json").read_text())
    agent = fingerprint(settings, "scripted", given_model=True)
    assert data["split"] == "test" and data["seed"] == 7331 and data["agent"] == agent
    md = (config.out / "report.md").read_text()
    assert "Split `test` (seed 7331)" in md and f"Agent fingerprint `{agent['id']}`" in md
    assert "- `direct`: one model call, no tools" in md
    for row in load_cache(config.out / "results.jsonl").values():
        assert row.key.endswith(f"/s7331/{row.index}/scripted/{agent['id']}")
        assert row.split == "test" and row.agent == agent["id"]


@session_loop
async def test_results_of_another_agent_version_are_not_reused(
    backend: SandboxBackend,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = BenchConfig(families=["products"], n=1, arms=["direct"], out=tmp_path / "o")
    first = ScriptedModel(["Answer: 1"])
    await run_reasoning_bench(config, settings, model=first, backend=backend)
    again = ScriptedModel([])
    await run_reasoning_bench(config, settings, model=again, backend=backend)  # same version: cached
    assert not again.requests

    monkeypatch.setattr(arms, "DIRECT_SYSTEM", "Answer in one word.")
    changed = ScriptedModel(["Answer: 2"])
    report = await run_reasoning_bench(config, settings, model=changed, backend=backend)

    assert len(changed.requests) == 1 and changed.requests[0].messages[0]["content"] == "Answer in one word."
    assert report.families["products"]["direct"].n == 1
    rows = load_cache(config.out / "results.jsonl")
    assert len(rows) == 2 and len({r.agent for r in rows.values()}) == 2
    assert json.loads((config.out / "report.json").read_text())["agent"]["id"] == report.agent["id"]
