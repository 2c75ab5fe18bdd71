"""Run the arms over the families' items, cache each result, write the report.

Every (family, difficulty, arm, seed, index, model, agent fingerprint) result is one JSON line in
``<out>/results.jsonl``, appended as soon as it is scored, so an interrupted run resumes where it stopped:
items already there are not asked again. The agent's fingerprint (``fingerprint.py``: prompts, model and
its parameters, code version) is part of the key, so results of another agent version are never reused.

``split`` picks the items: ``dev`` (seed 0, what prompts are tuned on) or ``test`` (seed 7331, held out);
``seed`` overrides the split's seed.

A failure of the machinery (model endpoint down, sandbox gone) stops the run with the error; run the same
command again to resume.

Items run one at a time against the local model (two model calls at once on a small machine only slow
each other) and the scripted one (its replies come in order), ``jobs`` at a time against a remote
endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from thinkbox.bench.reasoning import arms, languages, router
from thinkbox.bench.reasoning.arms import ArmContext, Earlier, Outcome
from thinkbox.bench.reasoning.fingerprint import agent_fingerprint, module_prompts
from thinkbox.bench.reasoning.report import ItemResult, Report, build_report, markdown, write_chart
from thinkbox.bench.reasoning.tasks import SPLITS, Family, Item, get_family
from thinkbox.config import Settings
from thinkbox.errors import ConfigError, ThinkboxError
from thinkbox.models.base import ModelBackend
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.types import ExecutionResult, SessionConfig

Progress = Callable[[str], None]
ARMS = ("direct", "cot", "code", *languages.LANGUAGE_ARMS, "router")
DEFAULT_ARMS = ("direct", "code", "router")
DEFAULT_FAMILIES = (
    "products",
    "decimal_arithmetic",
    "letter_counting",
    "calendar_arithmetic",
    "time_intervals",
    "shortest_path",
    "count_primes",
    "gsm_symbolic",
    "number_sorting",
    "base_conversion",
    "humaneval",
    "csv_stats",
    "tsp",
    "knapsack",
    "loan",
    "recall",
    "wording",
)
QUICK_FAMILIES = ("products", "letter_counting", "csv_stats", "recall")
QUICK_N = 3
ONE_AT_A_TIME = ("local", "scripted")
"""Providers asked one item at a time: the local model (2 cores), the scripted one (replies in order)."""


class BenchConfig(BaseModel):
    """What to run. The same fields are the command's flags."""

    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES))
    n: int = Field(20, ge=1, description="Items per family.")
    split: Literal["dev", "test"] = Field(
        "dev", description="dev: seed 0, what prompts are tuned on; test: seed 7331, held out."
    )
    seed: int | None = Field(None, description="Overrides the split's seed.")
    difficulty: int = Field(2, ge=1, le=3)
    arms: list[str] = Field(default_factory=lambda: list(DEFAULT_ARMS))
    router: str = router.DEFAULT_ROUTER
    jobs: int = Field(1, ge=1, description="Items at once (forced to 1 for the local model).")
    out: Path = Path("bench-reasoning")

    def arm_key(self, arm: str) -> str:
        return f"router:{self.router}" if arm == "router" else arm  # router:DESIGN is its own key

    @property
    def item_seed(self) -> int:
        """The seed the items are drawn with: ``seed`` when given, else the split's."""
        return SPLITS[self.split] if self.seed is None else self.seed


class SandboxChecker:
    """Runs a program in a fresh session of the pool (HumanEval's tests)."""

    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool

    async def run(self, code: str, *, timeout_s: float) -> ExecutionResult:
        async with self.pool.lease() as session:
            return await session.execute(code, timeout=timeout_s)


def load_cache(path: Path) -> dict[str, ItemResult]:
    """Results already in ``path`` by key; a line cut short by a kill is skipped (and ended, so that the
    next result appended starts on a line of its own)."""
    cached: dict[str, ItemResult] = {}
    if not path.exists():
        return cached
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        with path.open("a", encoding="utf-8") as f:
            f.write("\n")
    for line in text.splitlines():
        with contextlib.suppress(ValidationError, ValueError):
            result = ItemResult.model_validate_json(line)
            cached[result.key] = result
    return cached


def item_key(item: Item, arm_key: str, config: BenchConfig, model: str, agent: str) -> str:
    """A result's cache key; ``agent``: the agent fingerprint's id."""
    return f"{item.family}/d{config.difficulty}/{arm_key}/s{config.item_seed}/{item.index}/{model}/{agent}"


PLAIN_ARMS = {
    "direct": arms.direct,
    "cot": arms.cot,
    "code": arms.code,
    "code:py": languages.code_py,
    "code:js": languages.code_js,
    "code:both": languages.code_both,
}


async def answer(arm: str, item: Item, ctx: ArmContext, config: BenchConfig) -> Outcome:
    if arm in PLAIN_ARMS:
        return await PLAIN_ARMS[arm](item, ctx)
    design = arm.partition(":")[2] or config.router
    return await router.get_router(design)(item, ctx)


def arm_prompts() -> dict[str, str]:
    """Every prompt the arms may send besides the agent's system prompts: part of the fingerprint."""
    return module_prompts(arms, languages, router)


def fingerprint(settings: Settings, model: str, *, given_model: bool = False) -> dict[str, Any]:
    """The agent fingerprint of a run (:func:`agent_fingerprint`) over every language's system prompt (in
    the settings' reply format) and the arms' prompts."""
    from thinkbox.agent import reply_format

    form = settings.agent.reply_format
    texts = {
        f"system.{lang}": reply_format.system_prompt(language=lang, reply_format=form)
        for lang in ("py", "js", "sh", "auto")
    }
    return agent_fingerprint(settings, {**texts, **arm_prompts()}, model, given_model=given_model)


def arm_order(arm: str) -> int:
    return ARMS.index(arm) if arm in ARMS else ARMS.index(arm.partition(":")[0])


Work = tuple[Family, Item, str, str]
"""(family, item, arm, cache key): one model answer to get and score."""


def plan(config: BenchConfig, families: dict[str, Family], model: str, agent: str) -> list[Work]:
    """The runs in order: by family, then by arm (the router last), then by item. Runs of one arm in a
    row share their prompt's prefix, which a local model keeps in its cache. ``agent``: the agent
    fingerprint's id (part of every key)."""
    work: list[Work] = []
    for family in families.values():
        items = family.items(config.n, config.item_seed, config.difficulty)
        for arm in sorted(config.arms, key=arm_order):
            key = config.arm_key(arm)
            work.extend((family, item, arm, item_key(item, key, config, model, agent)) for item in items)
    return work


def check_config(config: BenchConfig) -> dict[str, Family]:
    """The families by name; ConfigError naming the flag for a bad arm, router or family."""
    designs = [f"router:{d}" for d in router.ROUTERS]
    unknown = [a for a in config.arms if a not in (*ARMS, *designs)]
    if unknown or not config.arms:
        raise ConfigError(
            f"unknown arm(s) {', '.join(unknown) or '(none)'}; fix --arms: {','.join(ARMS)} (the router of "
            f"--router), or another router design side by side: {','.join(designs)}"
        )
    families = {name: get_family(name) for name in config.families}
    programs = {name: getattr(f, "answer_language", "py") for name, f in families.items() if f.kind == "code"}
    refused = [(a, name) for a in config.arms for name, lang in programs.items()
               if a == "code:both" or (a == "code:js" and lang != "js")]  # fmt: skip
    if refused:
        arm, name = refused[0]
        raise ConfigError(
            f"arm {arm} cannot answer {name}: it asks for a program in {programs[name]} (code:both compares "
            "values, code:js writes JavaScript); fix --families or --arms"
        )
    router.get_router(config.router)
    keys = [config.arm_key(a) for a in config.arms]
    if len(set(keys)) < len(keys):
        raise ConfigError(
            f"--arms names the same arm twice ({','.join(config.arms)}; --router {config.router})"
        )
    return families


async def run_reasoning_bench(
    config: BenchConfig,
    settings: Settings,
    *,
    model: ModelBackend | None = None,
    backend: SandboxBackend | None = None,
    progress: Progress | None = None,
    command: str = "",
) -> Report:
    """Run (or resume) the benchmark; write results.jsonl, report.json, report.md and chart.png to ``out``.

    ``model`` / ``backend``: given ones are used and left open (tests); else they are built from
    ``settings`` and closed at the end."""
    say = progress or (lambda _m: None)
    families = check_config(config)
    jobs = config.jobs
    own_model = model is None
    if model is None:
        from thinkbox.models.factory import get_model

        provider = settings.resolved_provider()
        if provider in ONE_AT_A_TIME and jobs > 1:
            say(f"the {provider} model answers one item at a time: --jobs 1")
            jobs = 1
        model = get_model(settings)
    own_backend = backend is None
    if backend is None:
        backend = registry.create_backend(settings.sandbox.backend)
    config.out.mkdir(parents=True, exist_ok=True)
    results_path = config.out / "results.jsonl"
    cached = load_cache(results_path)
    started = time.monotonic()
    agent = fingerprint(settings, model.name, given_model=not own_model)
    work = plan(config, families, model.name, agent["id"])
    todo = [w for w in work if w[3] not in cached]
    say(f"{len(work)} runs, {len(work) - len(todo)} cached, {len(todo)} to do ({model.name}, agent "
        f"{agent['id']}, {config.split} split, seed {config.item_seed}, jobs {jobs})")  # fmt: skip
    pool = SessionPool(backend, size=min(jobs, 2), config=SessionConfig(limits=settings.sandbox.limits))
    lock = asyncio.Lock()
    done = 0
    try:
        await pool.start()
        ctx = ArmContext(model=model, settings=settings, pool=pool)
        if settings.model.temperature == 0:
            ctx.earlier = _earlier(cached, config, model.name, agent["id"])
        checker = SandboxChecker(pool)

        async def one(family: Family, item: Item, arm: str, key: str) -> None:
            nonlocal done
            outcome = await answer(arm, item, ctx, config)
            correct = await family.score(item, outcome.answer or "", checker) if outcome.answer else False
            for attempt in outcome.attempts:  # code:both: each language's answer scored as well
                if attempt.answer:
                    attempt.correct = await family.score(item, attempt.answer, checker)
            result = _result(key, family, item, arm, outcome, correct, config, model.name, agent["id"])
            async with lock:
                with results_path.open("a", encoding="utf-8") as f:
                    f.write(result.model_dump_json() + "\n")
                cached[key] = result
                done += 1
            mark = "right" if correct else "wrong"
            left = (time.monotonic() - started) / done * (len(todo) - done)
            say(f"[{done}/{len(todo)}] {item.family} #{item.index} {arm}: {mark} ({outcome.wall_s:.1f} s; "
                f"about {left / 60:.0f} min left)")  # fmt: skip

        if jobs == 1:
            for w in todo:
                await one(*w)
        else:
            await _parallel(todo, one, jobs)
    finally:
        await pool.aclose()
        if own_backend:
            await backend.aclose()
        close = getattr(model, "aclose", None) if own_model else None
        if close is not None:
            await close()
    report = build_report(
        [cached[key].model_copy(update={"arm": arm}) for _f, _i, arm, key in work],
        model=model.name,
        split=config.split,
        seed=config.item_seed,
        agent=agent,
        n=config.n,
        difficulty=config.difficulty,
        arms=config.arms,
        router=config.router,
        families=list(families),
        wall_s=time.monotonic() - started,
        command=command,
    )
    write_outputs(report, config.out)
    return report


def _result(
    key: str,
    family: Family,
    item: Item,
    arm: str,
    outcome: Outcome,
    correct: bool,
    config: BenchConfig,
    model: str,
    agent: str,
) -> ItemResult:
    return ItemResult(
        key=key, family=item.family, kind=family.kind, arm=arm, split=config.split, seed=config.item_seed,
        agent=agent, difficulty=config.difficulty, index=item.index, model=model, question=item.question,
        expected=item.expected, answer=outcome.answer, correct=correct, code_ran=outcome.code_ran,
        steps=outcome.steps, tokens=outcome.tokens, wall_s=round(outcome.wall_s, 3), stop=outcome.stop,
        route=outcome.route, from_session=outcome.from_session, route_tokens=outcome.route_tokens,
        route_s=round(outcome.route_s, 3), reply=outcome.reply,
        agreed=outcome.agreed, attempts=outcome.attempts, notes=outcome.notes,
    )  # fmt: skip


def _earlier(cached: dict[str, ItemResult], config: BenchConfig, model: str, agent: str) -> Earlier:
    """Results of this agent version only (the key holds its fingerprint): another version's are never
    taken for this one's."""

    def earlier(item: Item, arm: str) -> Outcome | None:
        r = cached.get(item_key(item, arm, config, model, agent))
        if r is None:
            return None
        return Outcome(answer=r.answer, code_ran=r.code_ran, steps=r.steps, tokens=r.tokens, wall_s=r.wall_s,
                       stop=r.stop, route=r.route if arm.startswith("router") else arm,
                       from_session=r.from_session)  # fmt: skip

    return earlier


async def _parallel(todo: list[Work], one: Callable[..., object], jobs: int) -> None:
    gate = asyncio.Semaphore(jobs)

    async def gated(w: Work) -> None:
        async with gate:
            await one(*w)  # type: ignore[misc]

    try:
        async with asyncio.TaskGroup() as group:
            for w in todo:
                group.create_task(gated(w))
    except* ThinkboxError as eg:
        raise eg.exceptions[0] from None


def write_outputs(report: Report, out: Path) -> None:
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    write_chart(report, out / "chart.png")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")


def summary_json(report: Report) -> str:
    """The report as JSON: ``families`` -> {family: {arm: {...}}}, ``summary``, and the run's settings."""
    return json.dumps(report.model_dump(mode="json"), indent=2)
