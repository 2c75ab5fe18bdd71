"""The held-out targets on a report's table: a partial run shows its figure so far and what is missing,
never a verdict; a complete one is met or missed by the issue's thresholds. A run made in parts is
reported whole from its cache (``--from-cache``), one agent version's results only."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkbox.bench.reasoning.report import ArmStats, ItemResult, arm_stats, markdown, report_from_cache
from thinkbox.bench.reasoning.runner import fingerprint
from thinkbox.bench.reasoning.targets import BASELINE_CODE, CONTROLS, FAMILIES, HARDER, evaluate
from thinkbox.config import Settings


def stats(accuracy: float, n: int = 20) -> ArmStats:
    right = round(accuracy * n)
    rows = [
        ItemResult(key=str(i), family="f", kind="compute", arm="a", seed=7331, difficulty=2, index=i,
                   model="m", question="q", expected="1", answer="1", correct=i < right, code_ran=True,
                   steps=1, tokens=1, wall_s=1.0, stop="answered")
        for i in range(n)
    ]  # fmt: skip
    return arm_stats(rows)


def full_table(code: float, direct: float, cot: float, router: float) -> dict[str, dict[str, ArmStats]]:
    table = {f: {"direct": stats(direct), "cot": stats(cot), "code": stats(code), "router": stats(router)}
             for f in FAMILIES}  # fmt: skip
    for f in CONTROLS:
        table[f] = {"direct": stats(1.0, 60), "code": stats(1.0, 60), "router": stats(1.0, 60)}
    return table


def test_a_partial_run_says_what_is_missing_and_gives_no_verdict() -> None:
    table = {"products": {"direct": stats(0.1), "cot": stats(0.2), "code": stats(0.9), "router": stats(0.9)},
             "humaneval": {"code": stats(0.5)}, "recall": {"direct": stats(1.0, 20), "code": stats(1.0, 20),
             "router": stats(1.0, 20)}}  # fmt: skip
    by_name = {t.name: t for t in evaluate(table)}
    assert {t.status for t in by_name.values()} == {"not yet"}
    assert by_name["code_vs_text"].value == 70.0 and "products" not in by_name["code_vs_text"].missing
    assert "recall" in by_name["router"].missing  # controls need 60 items
    assert by_name["harder"].value == 50.0 and "humaneval direct" in by_name["harder"].missing
    assert "humaneval" not in by_name["harder"].missing and "loan" in by_name["harder"].missing
    assert by_name["no_regression"].value == -10.0  # products 90 % against 100 % (humaneval +5)


def test_a_complete_run_is_met_or_missed_by_the_thresholds() -> None:
    met = {t.name: t for t in evaluate(full_table(code=1.0, direct=0.5, cot=0.7, router=1.0))}
    assert {t.status for t in met.values()} == {"met"} and met["code_vs_text"].value == 30.0
    missed = {t.name: t for t in evaluate(full_table(code=0.35, direct=0.2, cot=0.3, router=0.3))}
    assert missed["code_vs_text"].status == "missed" and missed["code_vs_text"].value == 5.0
    assert missed["router"].status == "missed" and missed["router"].value == 5.0
    assert missed["harder"].status == "missed" and missed["harder"].value == 35.0
    worst = min(0.35 - v for v in BASELINE_CODE.values())
    assert missed["no_regression"].status == "missed" and missed["no_regression"].value == round(
        worst * 100, 1
    )
    assert set(HARDER) <= set(FAMILIES)


def row(family: str, arm: str, index: int, agent: str, correct: bool = True) -> ItemResult:
    return ItemResult(key=f"{family}/{arm}/{index}/{agent}", family=family, kind="compute", arm=arm,
                      split="test", seed=7331, agent=agent, difficulty=2, index=index, model="m",
                      question="q", expected="1", answer="1", correct=correct, code_ran=arm == "code",
                      steps=1, tokens=1, wall_s=2.0, stop="answered")  # fmt: skip


def test_a_run_made_in_parts_is_reported_whole_from_the_cache(settings: Settings, tmp_path: Path) -> None:
    agent = fingerprint(settings, "m")["id"]
    rows = [row("products", arm, i, agent) for arm in ("direct", "code") for i in range(20)]
    rows += [row("recall", "code", i, agent) for i in range(60)]
    rows += [row("loan", "code", i, "an-older-agent", correct=False) for i in range(20)]
    rows.append(row("products", "code", 99, agent, correct=False).model_copy(update={"split": "dev"}))
    text = "".join(r.model_dump_json() + "\n" for r in rows)
    (tmp_path / "results.jsonl").write_text(text, encoding="utf-8")

    report = report_from_cache(
        tmp_path, split="test", seed=7331, difficulty=2, settings=settings, command="... --from-cache"
    )

    assert list(report.families) == ["products", "recall"]  # the other version's loan is not this one's
    assert report.families["products"]["code"].n == 20 and report.families["recall"]["code"].n == 60
    assert report.families["products"]["code"].accuracy == 1.0  # the dev row is not a test result
    assert report.agent["id"] == agent and report.n == 60 and report.wall_s == 200.0
    assert "up to 60 items per family" in markdown(report, chart=None)
    older = report_from_cache(tmp_path, split="test", seed=7331, difficulty=2, settings=settings,
                              agent_id="an-older-agent")  # fmt: skip
    assert list(older.families) == ["loan"] and "another agent version" in older.agent["note"]
    with pytest.raises(ValueError, match="no dev results"):
        report_from_cache(tmp_path, split="dev", seed=1, difficulty=2, settings=settings)
