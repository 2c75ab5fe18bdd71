"""From per-item results to the report: accuracy with a Wilson 95 % interval, code use, steps, tokens, time.

Summary figures (percentage points, None when an arm is missing):

- ``code_minus_direct_pp``: mean over the computation families (kind ``compute`` and ``code``) of
  accuracy(code) - accuracy(direct);
- ``router_worst_gap_pp``: the largest shortfall of the router below the better of direct and code on any
  family, controls included (the target is <= 2; negative means the router beat both everywhere).

The report names the split and seed the items came from and the agent's fingerprint (``fingerprint.py``),
and says what each arm was asked (:data:`ARM_PROMPTS`). For ``code:both`` it gives the agreement rate of
the two languages and the accuracy when they agreed and when they did not.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from thinkbox.bench.reasoning.targets import Target, evaluate, target_lines
from thinkbox.config import Settings

Z95 = 1.959964


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (0..1); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class Attempt(BaseModel):
    """One attempt of ``code:both``: a whole agent run in one language."""

    language: str
    answer: str | None
    correct: bool = False
    """Scored by the runner like any answer."""
    steps: int
    tokens: int
    wall_s: float
    stop: str


class ItemResult(BaseModel):
    """One arm on one item: the cached unit (one JSON line of results.jsonl)."""

    key: str
    family: str
    kind: str
    arm: str
    split: str = "dev"
    seed: int
    agent: str = ""
    """The agent fingerprint's id (part of ``key``)."""
    difficulty: int
    index: int
    model: str
    question: str
    expected: str
    answer: str | None
    correct: bool
    code_ran: bool
    steps: int
    tokens: int
    wall_s: float
    stop: str
    route: str | None = None
    from_session: bool = False
    """The answer is the code the agent left in its session (HumanEval), not its final answer."""
    route_tokens: int = 0
    """Router only: tokens of its decisions (included in ``tokens``)."""
    route_s: float = 0.0
    """Router only: seconds of its decisions (included in ``wall_s``)."""
    reply: str | None = None
    """direct and cot: the whole reply the answer was read from."""
    agreed: bool | None = None
    """code:both: whether the Python and JavaScript answers agreed."""
    attempts: list[Attempt] = Field(default_factory=list)
    """code:both: each attempt (Python, JavaScript, and the third when they disagreed)."""
    notes: list[str] = Field(default_factory=list)


class ArmStats(BaseModel):
    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    correct: int
    code_rate: float = Field(description="Share of items where code was run.")
    mean_steps: float
    mean_tokens: float
    mean_s: float
    median_s: float = 0.0
    no_answer: int = Field(description="Items where the agent stopped at a limit without an answer.")
    routed_code: float | None = Field(None, description="Router only: share of items routed to code.")
    route_s: float | None = Field(
        None, description="Router only: mean seconds per item of its decisions (its extra cost)."
    )
    route_tokens: float | None = Field(
        None, description="Router only: mean tokens per item of its decisions."
    )
    from_session: int = Field(
        0,
        description="Items whose answer is the code the agent left in its session (HumanEval), not its "
        "final answer (which was a tested value).",
    )
    agreement: float | None = Field(None, description="code:both: share of items where the languages agreed.")
    agreed_n: int | None = Field(None, description="code:both: items where they agreed.")
    accuracy_agreed: float | None = Field(None, description="code:both: accuracy where they agreed.")
    accuracy_disagreed: float | None = Field(
        None, description="code:both: accuracy where they disagreed (the third attempt's answer)."
    )


class Summary(BaseModel):
    code_minus_direct_pp: float | None
    router_worst_gap_pp: float | None
    router_worst_family: str | None
    code_minus_direct_by_family_pp: dict[str, float]
    router_gap_by_family_pp: dict[str, float]
    other_routers_worst_gap_pp: dict[str, float] = Field(
        default_factory=dict, description="router:DESIGN arms (other designs run side by side): worst gap."
    )
    perfect_router_by_family: dict[str, float] = Field(
        default_factory=dict,
        description="Share of items that direct or code got right: what a router that always picked the "
        "right arm would reach (the router's headroom).",
    )


ARM_PROMPTS = {
    "direct": "one model call, no tools: may reason briefly, ends with an 'Answer:' line (files inlined; "
    "384 tokens, a program 768)",
    "cot": "one model call, no tools: reasons step by step in text, ends with an 'Answer:' line (the budget "
    "of one agent step, model.max_tokens)",
    "code": "the agent in a sandbox session, told to work the answer out in code (agent.language)",
    "code:py": "the agent in Python, told to work the answer out in Python",
    "code:js": "the agent in JavaScript (Node.js), told to work the answer out in JavaScript",
    "code:both": "code:py and code:js, each in its own session; agreeing answers stand, else a third Python "
    "attempt told both answers",
    "router": "the product's routing (thinkbox ask --route auto) run for real, no arm's result reused: a "
    "label call sends a program direct and a value to the loop, whose first action decides; a direct "
    "answer when the code route stops at a limit; the label call's tokens and seconds are in its figures",
}
"""What each arm is asked, in words (the exact prompts are in arms.py and languages.py; their hashes in
the agent fingerprint)."""


class Report(BaseModel):
    model: str
    split: str = "dev"
    seed: int
    agent: dict[str, Any] = Field(
        default_factory=dict, description="The agent fingerprint: prompts, model, parameters, code version."
    )
    n: int
    difficulty: int
    arms: list[str]
    router: str
    kinds: dict[str, str]
    families: dict[str, dict[str, ArmStats]]
    summary: Summary
    wall_s: float
    command: str = ""
    from_cache: bool = Field(False, description="Reported from cached results (--from-cache), nothing asked.")
    targets: list[Target] = Field(
        default_factory=list,
        description="The held-out targets on this table (targets.py): met, missed or "
        "not yet (some family or arm they need has not run).",
    )


def arm_stats(results: list[ItemResult]) -> ArmStats:
    n = len(results)
    correct = sum(r.correct for r in results)
    low, high = wilson(correct, n)
    routed = [r.route for r in results if r.route is not None and r.arm.startswith("router")]

    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 3) if values else 0.0

    both = [r for r in results if r.agreed is not None]
    agreed = [r for r in both if r.agreed]
    disagreed = [r for r in both if not r.agreed]

    def accuracy(rows: list[ItemResult]) -> float | None:
        return round(sum(r.correct for r in rows) / len(rows), 4) if rows else None

    return ArmStats(
        accuracy=round(correct / n, 4) if n else 0.0,
        ci_low=round(low, 4),
        ci_high=round(high, 4),
        n=n,
        correct=correct,
        code_rate=round(sum(r.code_ran for r in results) / n, 4) if n else 0.0,
        mean_steps=mean([r.steps for r in results]),
        mean_tokens=mean([r.tokens for r in results]),
        mean_s=mean([r.wall_s for r in results]),
        median_s=round(statistics.median(r.wall_s for r in results), 3) if results else 0.0,
        no_answer=sum(r.answer is None for r in results),
        routed_code=round(sum("code" in r for r in routed) / len(routed), 4) if routed else None,
        route_s=mean([r.route_s for r in results]) if routed else None,
        route_tokens=mean([r.route_tokens for r in results]) if routed else None,
        from_session=sum(r.from_session for r in results),
        agreement=round(len(agreed) / len(both), 4) if both else None,
        agreed_n=len(agreed) if both else None,
        accuracy_agreed=accuracy(agreed),
        accuracy_disagreed=accuracy(disagreed),
    )


def router_gaps(families: dict[str, dict[str, ArmStats]], arm: str) -> dict[str, float]:
    """Per family: how far ``arm`` falls below the better of direct and code, in points."""
    gaps: dict[str, float] = {}
    for family, by_arm in families.items():
        routed, others = by_arm.get(arm), [by_arm[a] for a in ("direct", "code") if a in by_arm]
        if routed and others:
            gaps[family] = round((max(a.accuracy for a in others) - routed.accuracy) * 100, 2)
    return gaps


def summarize(families: dict[str, dict[str, ArmStats]], kinds: dict[str, str]) -> Summary:
    diffs: dict[str, float] = {}
    for family, by_arm in families.items():
        direct, code = by_arm.get("direct"), by_arm.get("code")
        if direct and code and kinds.get(family) != "control":
            diffs[family] = round((code.accuracy - direct.accuracy) * 100, 2)
    gaps = router_gaps(families, "router")
    worst = max(gaps, key=lambda f: gaps[f]) if gaps else None
    designs = sorted({a for by_arm in families.values() for a in by_arm if a.startswith("router:")})
    by_design = {a: max(g.values()) for a in designs if (g := router_gaps(families, a))}
    return Summary(
        code_minus_direct_pp=round(statistics.fmean(diffs.values()), 2) if diffs else None,
        router_worst_gap_pp=gaps[worst] if worst else None,
        router_worst_family=worst,
        code_minus_direct_by_family_pp=diffs,
        router_gap_by_family_pp=gaps,
        other_routers_worst_gap_pp=by_design,
    )


def perfect_router(results: list[ItemResult]) -> dict[str, float]:
    """Per family where both arms ran: the share of items that direct or code got right."""
    right: dict[str, dict[int, bool]] = {}
    arms: dict[str, set[str]] = {}
    for r in results:
        if r.arm in ("direct", "code"):
            arms.setdefault(r.family, set()).add(r.arm)
            items = right.setdefault(r.family, {})
            items[r.index] = items.get(r.index, False) or r.correct
    return {
        family: round(sum(items.values()) / len(items), 4)
        for family, items in right.items()
        if arms[family] == {"direct", "code"}
    }


def first_attempts(rows: list[ItemResult]) -> dict[str, list[ItemResult]]:
    """code:both's first attempt in each language, as rows of their own (``code:both[py]``,
    ``code:both[js]``): what each language alone answered in that arm's runs."""
    found: dict[str, list[ItemResult]] = {}
    for r in rows:
        seen: set[str] = set()
        for a in r.attempts:
            if a.language in seen:
                continue
            seen.add(a.language)
            found.setdefault(a.language, []).append(
                r.model_copy(
                    update={
                        "arm": f"code:both[{a.language}]", "answer": a.answer, "correct": a.correct,
                        "steps": a.steps, "tokens": a.tokens, "wall_s": a.wall_s, "stop": a.stop,
                        "agreed": None, "attempts": [],
                    }
                )
            )  # fmt: skip
    return found


def build_report(
    results: list[ItemResult],
    *,
    model: str,
    split: str = "dev",
    seed: int,
    agent: dict[str, Any] | None = None,
    n: int,
    difficulty: int,
    arms: list[str],
    router: str,
    families: list[str],
    wall_s: float,
    command: str = "",
) -> Report:
    table: dict[str, dict[str, ArmStats]] = {}
    kinds: dict[str, str] = {}
    for family in families:
        rows = [r for r in results if r.family == family]
        if rows:
            kinds[family] = rows[0].kind
        table[family] = {arm: arm_stats(got) for arm in arms if (got := [r for r in rows if r.arm == arm])}
        for language, attempt_rows in first_attempts(rows).items():
            table[family][f"code:both[{language}]"] = arm_stats(attempt_rows)
    return Report(
        model=model,
        split=split,
        seed=seed,
        agent=agent or {},
        n=n,
        difficulty=difficulty,
        arms=arms,
        router=router,
        kinds=kinds,
        families=table,
        summary=summarize(table, kinds).model_copy(
            update={"perfect_router_by_family": perfect_router(results)}
        ),
        wall_s=round(wall_s, 1),
        command=command,
        targets=evaluate(table),
    )


def report_from_cache(
    out: Path,
    *,
    split: str,
    seed: int,
    difficulty: int,
    settings: Settings,
    agent_id: str | None = None,
    families: list[str] | None = None,
    command: str = "",
) -> Report:
    """The report of the results already in ``out`` (nothing is asked): one agent version's (``agent_id``;
    by default this checkout's, else the version with the most results), each family with the items it
    has. A run made in parts (one family per command, over several sessions) is reported whole this way."""
    from thinkbox.bench.reasoning.runner import arm_order, fingerprint, load_cache

    where = out / "results.jsonl"
    rows = [
        r for r in load_cache(where).values() if (r.split, r.seed, r.difficulty) == (split, seed, difficulty)
    ]
    if not rows:
        raise ValueError(f"no {split} results (seed {seed}, difficulty {difficulty}) in {where}")
    parts = fingerprint(settings, Counter(r.model for r in rows).most_common(1)[0][0])
    versions = Counter(r.agent for r in rows)
    agent_id = agent_id or (parts["id"] if parts["id"] in versions else versions.most_common(1)[0][0])
    rows = [r for r in rows if r.agent == agent_id]
    if not rows:
        raise ValueError(f"no results of agent {agent_id} in {where}")
    if parts["id"] != agent_id:  # not this checkout's version: its fingerprint's parts are not known here
        parts = {
            "id": agent_id,
            "note": f"results of another agent version than this checkout's ({parts['id']})",
        }
    chosen = [
        f for f in families or dict.fromkeys(r.family for r in rows) if any(r.family == f for r in rows)
    ]
    rows = [r for r in rows if r.family in chosen]
    arms = sorted({r.arm for r in rows}, key=arm_order)
    per_arm = [sum(r.family == f and r.arm == a for r in rows) for f in chosen for a in arms]
    report = build_report(
        rows, model=rows[0].model, split=split, seed=seed, agent=parts, n=max(per_arm), difficulty=difficulty,
        arms=arms, router="auto", families=chosen, wall_s=sum(r.wall_s for r in rows), command=command,
    )  # fmt: skip
    return report.model_copy(update={"from_cache": True})


def _pct(x: float) -> str:
    return f"{x * 100:.0f}"


def markdown(report: Report, chart: str | None = "chart.png") -> str:
    cached = report.from_cache
    time = (
        f"the items' own seconds summed {report.wall_s:.0f} s"
        if cached
        else f"wall time {report.wall_s:.0f} s"
    )
    lines = [
        f"# thinkbox bench reasoning: {report.model}",
        "",
        f"Split `{report.split}` (seed {report.seed}), {'up to ' if cached else ''}{report.n} items per "
        f"family, difficulty {report.difficulty}, router design `{report.router}`, {time}.",
    ]
    if report.command:
        lines += ["", f"Command: `{report.command}`"]
    lines += ["", *_agent_lines(report), "", "Arms:"]
    lines += [f"- `{arm}`: {ARM_PROMPTS.get(arm.partition(':')[0] if arm.startswith('router') else arm, arm)}"
              for arm in report.arms]  # fmt: skip
    if "code:both" in report.arms:
        lines.append(
            "- `code:both[py]`, `code:both[js]`: code:both's first attempt in each language, scored alone "
            "(the very requests code:py and code:js send)"
        )
    lines += [
        "",
        "| family | kind | arm | accuracy % | 95 % interval | n | code used % | steps | tokens | s/item | "
        "median s |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for family, by_arm in report.families.items():
        for arm, s in by_arm.items():
            lines.append(
                f"| {family} | {report.kinds.get(family, '')} | {arm} | {_pct(s.accuracy)} | "
                f"{_pct(s.ci_low)}-{_pct(s.ci_high)} | {s.n} | {_pct(s.code_rate)} | {s.mean_steps:.1f} | "
                f"{s.mean_tokens:.0f} | {s.mean_s:.1f} | {s.median_s:.1f} |"
            )
    sm = report.summary

    def pp(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.1f} points"

    lines += [
        "",
        f"- code - direct, mean over computation families: {pp(sm.code_minus_direct_pp)}",
        f"- router, worst shortfall below the better of direct and code: {pp(sm.router_worst_gap_pp)}"
        + (f" ({sm.router_worst_family})" if sm.router_worst_family else ""),
    ]
    for arm, gap in sm.other_routers_worst_gap_pp.items():
        lines.append(f"- {arm}, worst shortfall: {pp(gap)}")
    taken = [
        f"{family} {arm} {s.from_session}/{s.n}"
        for family, by_arm in report.families.items()
        for arm, s in by_arm.items()
        if s.from_session
    ]
    if taken:
        lines.append(
            "- answers that are the code the agent left in its session, its final answer being a value its "
            f"test printed: {', '.join(taken)}"
        )
    cost = [
        f"{family} {s.route_s:.1f} s / {s.route_tokens:.0f} tokens, {_pct(s.routed_code or 0)} % to code"
        for family, by_arm in report.families.items()
        for arm, s in by_arm.items()
        if arm.startswith("router") and s.route_s is not None and s.route_tokens is not None
    ]
    if cost:
        lines.append(f"- the router's own decisions per item (included in its figures): {'; '.join(cost)}")
    for family, by_arm in report.families.items():
        both = by_arm.get("code:both")
        if both is not None and both.agreement is not None:
            lines.append(
                f"- code:both on {family}: the languages agreed on {both.agreed_n}/{both.n} items "
                f"({_pct(both.agreement)} %); accuracy when they agreed {_maybe_pct(both.accuracy_agreed)}, "
                f"when they did not (third attempt) {_maybe_pct(both.accuracy_disagreed)}"
            )
    if sm.perfect_router_by_family:
        best = ", ".join(f"{f} {_pct(v)} %" for f, v in sm.perfect_router_by_family.items())
        lines.append(f"- a router that always picked the right arm would reach: {best}")
    lines += target_lines(report.targets, report.split)
    if chart:
        lines += ["", f"![accuracy by family and arm]({chart})"]
    return "\n".join(lines) + "\n"


def _maybe_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{_pct(x)} %"


def _agent_lines(report: Report) -> list[str]:
    """The agent fingerprint in a few lines."""
    a = report.agent
    if not a:
        return ["Agent fingerprint: not recorded."]
    model = a.get("model", {})
    return [
        f"Agent fingerprint `{a.get('id')}`: thinkbox {a.get('thinkbox_version')}, commit "
        f"{a.get('git_commit') or 'unknown'}, source {a.get('source_sha')}; model {model.get('name')} "
        f"({model.get('provider')}, {model.get('identity')}), temperature {model.get('temperature')}, "
        f"max_tokens {model.get('max_tokens')}; prompts hashed in report.json (agent.prompts_sha)."
    ]


def write_chart(report: Report, path: Path) -> None:
    """Grouped bars: accuracy per family and arm, with the Wilson intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [f for f in report.families if report.families[f]]
    arms = report.arms
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(families) + 2), 4.2))
    for i, arm in enumerate(arms):
        xs, ys, lo, hi = [], [], [], []
        for j, family in enumerate(families):
            s = report.families[family].get(arm)
            if s is None:
                continue
            xs.append(j + (i - (len(arms) - 1) / 2) * width)
            ys.append(s.accuracy * 100)
            lo.append((s.accuracy - s.ci_low) * 100)
            hi.append((s.ci_high - s.accuracy) * 100)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=arm)
    ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
    ax.set_ylabel("accuracy %  (95 % Wilson interval)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"{report.model}: direct vs code vs router")
    ax.legend(loc="upper center", ncol=max(len(arms), 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
