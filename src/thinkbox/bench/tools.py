"""``thinkbox bench tools``: does a tool the agent saved make the next run of the same question cheaper?

One user of a fresh ``thinkbox serve`` (a child process on a loopback port, its own data dir, the
settings' model: the embedded one by default) asks :data:`QUESTIONS` one after another, then the same
three again. Each question asks for a function, tested and saved as a tool (``save_tool``, a function in
the session: see ``service/tools/agent.py``); in the second round the system prompt lists the saved tools
and the model may import them (or, with ``service.preimport_tools``, call those the service imported into the
session before the run). Per run: steps, tokens, seconds, the answer and whether it is right, whether a tool
of that name exists after the first round (saved by the model's ``save_tool`` or by the service's harvest
after the answer: :mod:`thinkbox.service.tools.harvest`), and whether the run used a saved tool (see
:func:`_bound_by_tools`). The figures compared are the sums over the
three questions of each round: steps, and seconds to the answer (the harvest, which runs after the answer,
is reported on its own and is in the run's total seconds, not in the answer's). The questions are this
benchmark's own, not items of ``bench reasoning``.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from thinkbox.agent.events import ActionParsed, ExecutionFinished, FinalAnswer, RunFinished, ToolsHarvested
from thinkbox.bench.service_server import ChildServer, free_port, machine, make_users
from thinkbox.client import AsyncClient
from thinkbox.errors import ThinkboxError

Progress = Callable[[str], None]

QUESTIONS: tuple[tuple[str, str, float], ...] = (
    (
        "business_days",
        "How many business days (Monday to Friday) are there from 2026-03-02 to 2026-04-17, both days "
        "counted? Write a function business_days(start, end) taking ISO date strings, test it, and save "
        "it as a tool named business_days so that later questions can reuse it.",
        35.0,
    ),
    (
        "loan_payment",
        "What is the monthly payment of a loan of 250000 at 4.5 % a year over 30 years, paid monthly "
        "(annuity)? Write a function loan_payment(principal, annual_rate_percent, years), test it, and "
        "save it as a tool named loan_payment so that later questions can reuse it.",
        1266.71,
    ),
    (
        "count_primes",
        "How many prime numbers are there below 100000? Write a function count_primes(n) that counts the "
        "primes below n, test it, and save it as a tool named count_primes so that later questions can "
        "reuse it.",
        9592.0,
    ),
)
WARM_UP = "What is 2 + 2?"
"""Asked once before round 1 and not counted: the model loads on the service's first run, which would
otherwise make round 1's first question look slower."""
COLUMNS = (
    "question",
    "round",
    "status",
    "steps",
    "tokens",
    "answer s",
    "harvest s",
    "right",
    "saved",
    "used tool",
)
CODE_CHARS = 4000
"""Each step's code is kept in the JSON up to this many characters."""
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
METHOD = {
    "steps": "agent steps of the run (RunFinished.steps)",
    "tokens": "prompt + completion tokens of the run (RunFinished.tokens)",
    "seconds": "from the POST of the run to its run_finished event, in the bench process (harvest included)",
    "answer_s": "from the POST of the run to its final_answer event (the time compared between rounds)",
    "harvest_s": "the tools_harvested event's duration_s: the service saving the run's functions as tools "
    "after the answer (0: nothing to harvest)",
    "harvested": "tools the harvest saved from the run (tools_harvested outcome saved)",
    "saved": "a tool of the question's name exists (GET /v1/tools) after the first round",
    "used_tool": "a step of the run that ran without an error imported a function from a saved tool's "
    "module (from tools.NAME import f; an import tried inside try/except counts too), or called a function f "
    "of a saved tool (listed by GET /v1/tools before the run, or harvested earlier) that no earlier def of "
    "the run (nor an earlier line of that step) had defined, so the call could only run through the "
    "service's pre-import (service.preimport_tools); and no later def of the run replaced f with its own "
    "code",
    "code": "the code of each step that ran, in order (cut at CODE_CHARS characters)",
    "right": "the last number of the answer is within 0.01 (relative 1e-4) of the expected value",
}


class ToolRun(BaseModel):
    question: str
    round: int
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    answer_s: float = 0.0
    harvest_s: float = 0.0
    harvested: list[str] = Field(default_factory=list)
    answer: str = ""
    right: bool = False
    status: str = ""
    used_tool: bool = False
    saved: bool | None = None
    code: list[str] = Field(default_factory=list)
    """Each step's code (what ran), to see how a run used, or ignored, a saved tool."""


class ToolsBench(BaseModel):
    model: str = ""
    runs: list[ToolRun] = Field(default_factory=list)
    first_steps: int = 0
    second_steps: int = 0
    first_s: float = 0.0
    second_s: float = 0.0
    first_answer_s: float = 0.0
    second_answer_s: float = 0.0
    harvest_s: float = 0.0
    """Seconds of the harvests of both rounds (after the answers)."""
    first_tokens: int = 0
    second_tokens: int = 0
    tools_saved: int = 0
    second_runs_using_a_tool: int = 0
    target_second_cheaper: bool = False
    """The second round took fewer steps and less time to its answers than the first (sums over the
    questions; the first round's harvest is not counted in its time, which makes the comparison harder)."""
    warm_up_s: float = 0.0
    """Seconds of the uncounted first run (:data:`WARM_UP`), which loads the model."""
    errors: list[str] = Field(default_factory=list)
    method: dict[str, str] = Field(default_factory=lambda: dict(METHOD))
    machine: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = 0.0


def is_right(answer: str, expected: float) -> bool:
    found = _NUMBER.findall(answer.replace("$", ""))
    if not found:
        return False
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return False
    return abs(value - expected) <= max(0.01, abs(expected) * 1e-4)


async def _ask(
    client: AsyncClient,
    name: str,
    question: str,
    expected: float,
    round_no: int,
    saved: Collection[str] = (),
) -> ToolRun:
    """One run of ``question``; ``saved``: the functions of the tools saved before it."""
    run = ToolRun(question=name, round=round_no)
    started = time.perf_counter()
    info = await client.create_run(question)
    code = ""
    use = ToolUse(saved=set(saved))
    async for event in client.run_events(info.id):
        if isinstance(event, ActionParsed):
            code = event.code
        elif isinstance(event, ExecutionFinished):
            use.step(code, event.result.error is None)
            run.code.append(code[:CODE_CHARS])
            code = ""
        elif isinstance(event, FinalAnswer):
            run.answer_s = round(time.perf_counter() - started, 2)
        elif isinstance(event, ToolsHarvested):
            run.harvest_s = event.duration_s
            run.harvested = [t.function for t in event.tools if t.outcome == "saved"]
        elif isinstance(event, RunFinished):
            run.steps, run.tokens, run.status = event.steps, event.tokens, event.status
            run.answer = (event.answer or "")[:300]
    run.seconds = round(time.perf_counter() - started, 2)
    run.right = is_right(run.answer, expected)
    run.used_tool = bool(use.from_tools)
    return run


@dataclass
class ToolUse:
    """Which saved tools' functions a run's code used, step by step (the JSON's ``method.used_tool``)."""

    saved: set[str]
    """The functions of the tools saved before the run."""
    from_tools: set[str] = field(default_factory=set)
    """Functions bound to a saved tool's after the steps so far."""
    own: set[str] = field(default_factory=set)
    """Names the run's own code bound (defs, assignments, imports not from ``tools``)."""

    def step(self, code: str, ok: bool) -> None:
        """A step whose ``code`` ran, without an error when ``ok`` (only then do its imports and calls
        count; its bindings count either way: what ran before an error is defined)."""
        if ok:
            self.from_tools = _bound_by_tools(code, self.from_tools, self.saved - self.own)
        self.own |= _own_names(code)


def _bound_by_tools(code: str, names: set[str], preimported: Collection[str] = ()) -> set[str]:
    """``names`` (functions bound to a saved tool's) after ``code`` ran: its ``from tools.X import f`` add
    f, and so does a call of f in ``preimported`` (a saved tool's function that the run has not bound
    itself) made before any binding of f in ``code``: only the service's pre-import can have defined it;
    its ``def f`` (the model writing f again) take it away; in the order of the code's lines."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return names
    names = set(names)
    changes: list[tuple[int, bool, str]] = []
    bound = _bindings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tools."):
            changes += [(node.lineno, True, a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            changes.append((node.lineno, False, node.name))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in preimported:
            first = min(bound.get(node.func.id, [node.lineno + 1]))
            if node.lineno < first:
                changes.append((node.lineno, True, node.func.id))
    for _, imported, name in sorted(changes):
        (names.add if imported else names.discard)(name)
    return names


def _bindings(tree: ast.AST) -> dict[str, list[int]]:
    """The names ``tree``'s own code binds -> the lines: defs, classes, assignments, imports (except
    imports from a saved tool, ``from tools.X import f``, which bind the tool's function)."""
    found: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names = [node.id]
        elif isinstance(node, ast.Import):
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("tools."):
            names = [a.asname or a.name for a in node.names]
        for name in names:
            found.setdefault(name, []).append(getattr(node, "lineno", 0))
    return found


def _own_names(code: str) -> set[str]:
    """The names a step's code binds itself (see :func:`_bindings`); none when it does not parse."""
    try:
        return set(_bindings(ast.parse(code)))
    except SyntaxError:
        return set()


async def run_tools_bench(progress: Progress = lambda _m: None, timeout_s: float = 3600.0) -> ToolsBench:
    report = ToolsBench(machine=machine())
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="thinkbox-bench-tools-"))
    server = ChildServer(root / "data", free_port(), dict(os.environ))
    try:
        (key,) = await asyncio.to_thread(make_users, root / "data", 1, 1)
        progress("starting thinkbox serve (it loads the model in the background)")
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(timeout_s):
            await _rounds(server, key, report, progress)
    except (ThinkboxError, httpx.HTTPError, TimeoutError) as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}"[:500])
        if tail := server.log_tail().strip():
            report.errors.append(f"the server's log ends: {tail[-1500:]}")
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)
    _sum(report)
    report.duration_s = round(time.perf_counter() - began, 1)
    return report


async def _rounds(server: ChildServer, key: str, report: ToolsBench, progress: Progress) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    client = AsyncClient(server.url, key)
    try:
        progress(f"warming up (not counted): {WARM_UP!r}")
        warm = await _ask(client, "warm-up", WARM_UP, 4.0, 0)
        report.warm_up_s = warm.seconds
        for round_no in (1, 2):
            for name, question, expected in QUESTIONS:
                progress(f"round {round_no}: {name}")
                saved = await _saved_functions(server.url, headers)
                saved |= {f for r in report.runs for f in r.harvested}
                run = await _ask(client, name, question, expected, round_no, saved)
                report.runs.append(run)
                progress(
                    f"  {run.status}, {run.steps} steps, {run.answer_s} s to the answer, {run.seconds} s in "
                    f"all, answer {run.answer[:60]!r}, harvested {run.harvested or 'nothing'}"
                )
            if round_no == 1:
                async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
                    listed = (await http.get("/v1/tools")).json()
                names = {t["name"] for t in listed["tools"]}
                for run in report.runs:
                    run.saved = run.question in names
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            report.model = str((await http.get("/v1/models")).json().get("data", [{}])[0].get("id", ""))
    finally:
        await client.aclose()


async def _saved_functions(url: str, headers: dict[str, str]) -> set[str]:
    """The functions of the tools the user can import now (GET /v1/tools)."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        listed = (await http.get("/v1/tools")).json()
    return {f["name"] for tool in listed["tools"] for f in tool.get("functions", [])}


def _sum(report: ToolsBench) -> None:
    first = [r for r in report.runs if r.round == 1]
    second = [r for r in report.runs if r.round == 2]
    report.first_steps, report.second_steps = sum(r.steps for r in first), sum(r.steps for r in second)
    report.first_tokens, report.second_tokens = sum(r.tokens for r in first), sum(r.tokens for r in second)
    report.first_s = round(sum(r.seconds for r in first), 2)
    report.second_s = round(sum(r.seconds for r in second), 2)
    report.first_answer_s = round(sum(r.answer_s for r in first), 2)
    report.second_answer_s = round(sum(r.answer_s for r in second), 2)
    report.harvest_s = round(sum(r.harvest_s for r in report.runs), 2)
    report.tools_saved = sum(bool(r.saved) for r in first)
    report.second_runs_using_a_tool = sum(r.used_tool for r in second)
    complete = len(first) == len(second) == len(QUESTIONS)
    report.target_second_cheaper = complete and (
        report.second_steps < report.first_steps and report.second_answer_s < report.first_answer_s
    )
    report.target_second_cheaper = report.target_second_cheaper and all(r.answer_s for r in report.runs)


def render(report: ToolsBench, console: Console) -> None:
    table = Table(title=f"thinkbox bench tools ({report.model or 'model'})")
    for column in COLUMNS:
        table.add_column(column)
    for r in report.runs:
        saved = "" if r.saved is None else ("yes" if r.saved else "no")
        table.add_row(r.question, str(r.round), r.status, str(r.steps), str(r.tokens), f"{r.answer_s:.1f}",
                      f"{r.harvest_s:.1f}",
                      "yes" if r.right else "no", saved, "yes" if r.used_tool else "")  # fmt: skip
    console.print(table)
    verdict = "met" if report.target_second_cheaper else "missed"
    if report.target_second_cheaper and not report.second_runs_using_a_tool:
        verdict += ", but no second-round run used a saved tool: the difference is not the tools'"
    console.print(
        f"round 1: {report.first_steps} steps, {report.first_answer_s:.1f} s to the answers "
        f"({report.first_s:.1f} s in all), {report.first_tokens} tokens; round 2: {report.second_steps} "
        f"steps, {report.second_answer_s:.1f} s to the answers ({report.second_s:.1f} s in all), "
        f"{report.second_tokens} tokens; harvest {report.harvest_s:.1f} s; "
        f"tools saved {report.tools_saved}/{len(QUESTIONS)}, second-round runs using one "
        f"{report.second_runs_using_a_tool}; target (round 2 fewer steps and less time): {verdict}"
    )
    for error in report.errors:
        console.print(f"[red]{error}[/red]")
