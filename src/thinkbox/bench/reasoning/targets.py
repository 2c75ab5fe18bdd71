"""The held-out evaluation's targets (issue 17), checked on a report's table.

Each target says what it needs (families, arms, items per family) and is ``met``, ``missed``, or not yet
decidable (``None``) while some of what it needs has not run: a partial run shows its figure so far and
the families still missing, never a verdict. The targets are meant for the test split; on the dev split
the same figures are shown but say they are not the ones to report.

- ``code_vs_text``: code - max(direct, cot), mean over the computation families, >= +25 points;
- ``router``: the router never more than 2 points below the better of code and direct on any family
  (controls with 60 items);
- ``harder``: the code arm's mean over the six harder families >= 40 %, and HumanEval's code arm >= its
  direct arm;
- ``no_regression``: no family of the first eleven loses more than 5 points against the code arm of the
  agent the issue was written against (:data:`BASELINE_CODE`).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from thinkbox.bench.reasoning.report import ArmStats

FAMILIES = (
    "products", "decimal_arithmetic", "letter_counting", "calendar_arithmetic", "time_intervals",
    "shortest_path", "count_primes", "gsm_symbolic", "number_sorting", "base_conversion", "humaneval",
    "csv_stats", "tsp", "knapsack", "loan",
)  # fmt: skip
"""The computation families of the benchmark's tables (the default families less the two controls)."""
CONTROLS = ("recall", "wording")
FIRST_ELEVEN = FAMILIES[:11]
HARDER = ("gsm_symbolic", "humaneval", "knapsack", "loan", "tsp", "shortest_path")
ITEMS = 20
CONTROL_ITEMS = 60
BASELINE_CODE = {
    "products": 1.0, "decimal_arithmetic": 0.8, "letter_counting": 0.9, "calendar_arithmetic": 0.9,
    "time_intervals": 0.55, "shortest_path": 0.0, "count_primes": 0.95, "gsm_symbolic": 0.2,
    "number_sorting": 0.6, "base_conversion": 0.2, "humaneval": 0.45,
}  # fmt: skip
"""The code arm's accuracy before the issue (dev split, seed 0, difficulty 2, 20 items; the reports in
docs/bench/reasoning, reasoning-more and reasoning-rest): what ``no_regression`` compares against."""

Table = dict[str, dict[str, "ArmStats"]]


class Target(BaseModel):
    name: str
    goal: str
    value: float | None = Field(description="The figure so far, over the families that have run (points).")
    status: Literal["met", "missed", "not yet"]
    missing: list[str] = Field(default_factory=list, description="Families (or arms) still to run.")
    detail: str = ""


def _ready(table: Table, family: str, arms: tuple[str, ...]) -> bool:
    by_arm = table.get(family, {})
    items = CONTROL_ITEMS if family in CONTROLS else ITEMS
    return all(arm in by_arm and by_arm[arm].n >= items for arm in arms)


def _target(name: str, goal: str, value: float | None, ok: bool, missing: list[str], detail: str) -> Target:
    status: Literal["met", "missed", "not yet"] = "not yet" if missing else ("met" if ok else "missed")
    return Target(name=name, goal=goal, value=value, status=status, missing=missing, detail=detail)


def _pp(x: float) -> float:
    return round(x * 100, 1)


def evaluate(table: Table) -> list[Target]:
    """The four targets on ``table`` (family -> arm -> stats)."""
    targets = []
    arms = ("direct", "cot", "code")
    done = [f for f in FAMILIES if _ready(table, f, arms)]
    gains = {
        f: table[f]["code"].accuracy - max(table[f]["direct"].accuracy, table[f]["cot"].accuracy)
        for f in done
    }
    mean = _pp(statistics.fmean(gains.values())) if gains else None
    targets.append(_target(
        "code_vs_text", "code - max(direct, cot), mean over the computation families: >= +25 points", mean,
        mean is not None and mean >= 25, [f for f in FAMILIES if f not in done],
        ", ".join(f"{f} {_pp(g):+.0f}" for f, g in gains.items()),
    ))  # fmt: skip
    arms = ("direct", "code", "router")
    done = [f for f in (*FAMILIES, *CONTROLS) if _ready(table, f, arms)]
    gaps = {f: _pp(max(table[f]["direct"].accuracy, table[f]["code"].accuracy) - table[f]["router"].accuracy)
            for f in done}  # fmt: skip
    worst = max(gaps, key=lambda f: gaps[f]) if gaps else None
    targets.append(_target(
        "router", "router below the better of code and direct, worst family: <= 2 points (controls at 60 "
        "items)", gaps[worst] if worst else None, all(g <= 2 for g in gaps.values()),
        [f for f in (*FAMILIES, *CONTROLS) if f not in done], f"worst: {worst}" if worst else "",
    ))  # fmt: skip
    done = [f for f in HARDER if _ready(table, f, ("code",))]
    mean = _pp(statistics.fmean(table[f]["code"].accuracy for f in done)) if done else None
    he = table.get("humaneval", {})
    he_ok = "code" in he and "direct" in he and he["code"].accuracy >= he["direct"].accuracy
    he_missing = (
        ["humaneval direct"] if "humaneval" in done and not _ready(table, "humaneval", ("direct",)) else []
    )
    targets.append(_target(
        "harder", "code arm, mean over the six harder families: >= 40 %; HumanEval code >= direct", mean,
        mean is not None and mean >= 40 and he_ok, [f for f in HARDER if f not in done] + he_missing,
        f"HumanEval code {_pp(he['code'].accuracy):.0f} % vs direct {_pp(he['direct'].accuracy):.0f} %"
        if "code" in he and "direct" in he else "",
    ))  # fmt: skip
    done = [f for f in FIRST_ELEVEN if _ready(table, f, ("code",))]
    losses = {f: _pp(table[f]["code"].accuracy - BASELINE_CODE[f]) for f in done}
    worst = min(losses, key=lambda f: losses[f]) if losses else None
    targets.append(_target(
        "no_regression", "code arm against the code arm before the issue, worst of the first eleven "
        "families: >= -5 points", losses[worst] if worst else None, all(x >= -5 for x in losses.values()),
        [f for f in FIRST_ELEVEN if f not in done], ", ".join(f"{f} {x:+.0f}" for f, x in losses.items()),
    ))  # fmt: skip
    return targets


def target_lines(targets: list[Target], split: str) -> list[str]:
    """The report's section on the targets (markdown)."""
    heading = "Targets" if split == "test" else "Targets (dev split: not the figures to report)"
    lines = ["", f"## {heading}", "", "| target | goal | so far | status |", "|---|---|---:|---|"]
    for t in targets:
        value = "n/a" if t.value is None else f"{t.value:+.1f}" if t.name != "harder" else f"{t.value:.1f} %"
        status = t.status if not t.missing else f"not yet: {len(t.missing)} to run ({', '.join(t.missing)})"
        lines.append(f"| {t.name} | {t.goal} | {value} | {status} |")
    lines += ["", *(f"- {t.name}: {t.detail}" for t in targets if t.detail)]
    return lines
