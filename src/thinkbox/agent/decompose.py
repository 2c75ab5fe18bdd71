"""Decomposition: plan a question as a few functions, write and test each in the session, then compose them.

The design asks to treat each piece of a larger problem "like a function with defined inputs/outputs", to
check it with an evaluation step, and to orchestrate the pieces. :func:`run_decomposed` does that around the
loop (:func:`~thinkbox.agent.loop.run_agent`), not as a second agent:

1. **plan**: one model call whose reply is constrained to :data:`PLAN_SCHEMA` names 0-4 functions, each
   with a signature, a contract (what it takes and returns) and one test (an ``assert``), and says how they
   compose. No functions (the question needs no parts), or a reply that is not a usable plan: the plain
   loop answers the question, and ``PlanMade.note`` says why;
2. **parts**: per function, the loop runs a focused sub-question in the same session (its own short
   history: system prompt and sub-question), then the plan's test runs in the session for real. A failing
   test goes back to the model in that part's history (:data:`PART_RETRIES` times); a part that still fails
   is named as such to the composing step;
3. **compose**: the loop answers the user's question in the caller's history, told which tested functions
   the session defines and how to compose them: ``chain`` calls them one after another on each other's
   outputs; ``class`` makes them the methods of one class whose ``solve()`` returns the answer.

The stream is one run: one ``RunStarted`` and one ``RunFinished``, steps numbered across the parts, the
plan call counted as a step; the sub-runs' own start, finish and per-part answers are not passed on. The
limits of :class:`~thinkbox.config.AgentSettings` (steps, wall time, tokens) apply to the whole run: each
sub-run gets what is left. Only Python is decomposed (tests are Python asserts); other languages and
resumed runs take the plain loop.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from thinkbox.agent import prompts, reply_format
from thinkbox.agent.events import (
    Event,
    FinalAnswer,
    LimitName,
    LimitReached,
    PartTested,
    PlanMade,
    PlannedFunction,
    RunError,
    RunFinished,
    RunStarted,
)
from thinkbox.agent.loop import ResultHook, check_question, run_agent
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.base import Message, ModelBackend, ModelRequest, complete
from thinkbox.sandbox.session import Session

Orchestration = Literal["chain", "class"]
MAX_PARTS = 4
PART_RETRIES = 1  # a failing test is fed back this many times
PART_STEPS = 4  # steps one part may take, its retries included, so one part cannot use them all
COMPOSE_STEPS = 3  # steps kept for the composing step: parts never use them
_CONTEXT_CHARS = 1500  # of the question, shown to a part for context
_TEST_TIMEOUT_S = 10.0

_PART = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "signature": {"type": "string"},
        "contract": {"type": "string"},
        "test": {"type": "string"},
    },
    "required": ["name", "signature", "contract", "test"],
    "additionalProperties": False,
}
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "parts": {"type": "array", "items": _PART, "maxItems": MAX_PARTS},
        "compose": {"type": "string"},
    },
    "required": ["parts", "compose"],
    "additionalProperties": False,
}
_HOW = {
    "chain": "called one after another, each on the previous one's output",
    "class": "the methods of one class that holds the question's data",
}
PLAN_PROMPT = """\
Do not answer yet. Plan the question below as at most {max_parts} small Python functions that will be \
written and tested one by one, then {how}.

Question: {question}

For each function give "name", "signature" (e.g. "def parse_items(text: str) -> list[int]"), "contract" \
(what it takes and what it returns) and "test": one Python assert that calls it on a tiny example whose \
result you are sure of (e.g. "assert add(2, 3) == 5"). In "compose" say how the functions together answer \
the question. If one short computation answers the question, reply with an empty "parts" list.
Reply with one JSON object: {{"parts": [{{"name": "...", "signature": "...", "contract": "...", \
"test": "..."}}], "compose": "..."}}"""
PART_PROMPT = """\
Write one Python function of a larger task and test it.

{signature}
Contract: {contract}
Test: {test}

Define the function with execute_code, run the test and print "ok". When the test passes, reply with \
provide_answer "done". Do not solve the larger task now; it is, for context: {context}"""
RETRY_PROMPT = """\
I ran the test and it failed:
{error}
Fix {name} so that it keeps its contract and the test passes, run the test, then reply with provide_answer \
"done"."""
COMPOSE_PROMPT = {
    "chain": (
        "Answer the question by calling these functions one after another, each on the previous one's "
        "output (do not rewrite them). Print the result, then give the final answer."
    ),
    "class": (
        "Answer the question by composing these functions into one class: its __init__ stores the "
        "question's data, its methods call the functions (do not rewrite them), and its method solve() "
        "returns the answer. Create one instance, print its solve(), then give the final answer."
    ),
}


class PlanError(ValueError):
    """The plan reply is not a usable plan; the message says why."""


@dataclass
class _Totals:
    """The whole run's counters: steps (the plan call is one), tokens, wall time, feedback."""

    settings: Settings
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    tokens: int = 0
    feedback: dict[str, int] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def left(self, steps: int | None = None) -> Settings | None:
        """Settings for a sub-run with what the run has left (at most ``steps``); None: a limit is hit."""
        agent = self.settings.agent
        left = {
            "max_steps": min(agent.max_steps - self.steps, steps or agent.max_steps),
            "max_wall_s": agent.max_wall_s - (time.monotonic() - self.started),
            "max_tokens": agent.max_tokens - self.tokens,
        }
        if min(left.values()) <= 0:
            return None
        return self.settings.model_copy(update={"agent": agent.model_copy(update=left)})

    def limit(self, name: LimitName | None = None) -> LimitReached:
        """The run-wide limit ``name`` (None: the one hit) as the run's outcome, naming the setting."""
        agent = self.settings.agent
        if name is None:
            used_up = self.steps >= agent.max_steps, self.tokens >= agent.max_tokens
            name = "steps" if used_up[0] else "tokens" if used_up[1] else "wall_time"
        what = {
            "steps": f"{agent.max_steps} steps were used (agent.max_steps, --max-steps)",
            "tokens": f"{self.tokens:,} tokens were used, more than {agent.max_tokens:,} (agent.max_tokens)",
            "wall_time": f"the run took longer than {agent.max_wall_s:g} s (agent.max_wall_s)",
        }[name]
        return LimitReached(limit=name, message=f"stopped without an answer: {what}", steps=self.steps,
                            duration_s=self.elapsed, tokens=self.tokens)  # fmt: skip

    def outcome(self, event: FinalAnswer | LimitReached | RunError) -> FinalAnswer | LimitReached | RunError:
        """A sub-run's outcome as the run's: the run's totals; a shared limit with its run-wide value."""
        if isinstance(event, LimitReached) and event.limit in ("steps", "tokens", "wall_time"):
            return self.limit(event.limit)
        return event.model_copy(
            update={"steps": self.steps, "duration_s": self.elapsed, "tokens": self.tokens}
        )


async def run_decomposed(
    question: str,
    *,
    model: ModelBackend,
    session: Session,
    settings: Settings,
    history: list[Message] | None = None,
    run_id: str | None = None,
    on_result: ResultHook | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` by plan, tested parts and composition (agent.decompose); yield one run's events.

    The arguments are :func:`run_agent`'s; ``history`` (a chat) gets the composing step's messages, or the
    plain loop's when the plan is empty, so a chat goes on as after any run."""
    text = check_question(question)
    orchestration: Orchestration = "class" if settings.agent.decompose == "class" else "chain"
    messages = history if history is not None else []
    totals = _Totals(settings)
    run_id = run_id or uuid.uuid4().hex[:12]
    listing = await session.list_files()
    files = [f.path for f in listing if not f.is_dir and not prompts.is_hidden(f.path)]
    yield RunStarted(
        run_id=run_id, question=text, model=model.name, sandbox=session.backend.name, files=files
    )
    system = next((m["content"] for m in messages[:1] if m["role"] == "system"), None)
    agent = settings.agent
    system = system or reply_format.system_prompt(listing, agent.language, agent.reply_format)
    end: FinalAnswer | LimitReached | RunError
    try:
        plan = await _plan(text, orchestration, model, settings, system, totals)
        yield plan
        sub = _SubRuns(model, session, on_result, run_id, totals)
        async for event in _parts_then_compose(sub, plan, text, system, messages):
            yield event
        end = sub.end if sub.end is not None else totals.limit()
    except TimeoutError:  # the plan call outlived the run's wall time
        end = totals.limit("wall_time")
    except ThinkboxError as exc:
        end = RunError(code=exc.code, message=exc.message, retryable=exc.retryable)
    end = totals.outcome(end)
    yield end
    status = {"final_answer": "answered", "limit_reached": "limit"}.get(end.type, "error")
    answer = end.answer if isinstance(end, FinalAnswer) else None
    yield RunFinished(run_id=run_id, status=status, answer=answer, steps=totals.steps,  # type: ignore[arg-type]
                      duration_s=totals.elapsed, tokens=totals.tokens, feedback=totals.feedback)  # fmt: skip


async def _plan(
    question: str, orchestration: Orchestration, model: ModelBackend, settings: Settings, system: str,
    totals: _Totals,
) -> PlanMade:  # fmt: skip
    """The plan call (one step); an empty plan with a note when decomposition does not apply."""
    made = PlanMade(orchestration=orchestration)
    if settings.agent.language != "py":
        return made.model_copy(
            update={"note": "only Python is decomposed (agent.language); the plain loop answers"}
        )
    started = time.monotonic()
    prompt = PLAN_PROMPT.format(max_parts=MAX_PARTS, how=_HOW[orchestration], question=question)
    request = ModelRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        json_schema=PLAN_SCHEMA,
        max_tokens=settings.model.max_tokens,
        temperature=settings.model.temperature,
    )
    totals.steps += 1
    async with asyncio.timeout(settings.agent.max_wall_s):
        reply = await complete(model, request)
    totals.tokens += reply.usage.total
    cost = {"tokens": reply.usage.total, "duration_s": round(time.monotonic() - started, 3)}
    try:
        functions, compose = parse_plan(reply.text)
    except PlanError as exc:
        note = f"the plan reply was not usable ({exc}); the plain loop answers"
        return made.model_copy(update={"note": note, **cost})
    note = "" if functions else "the model planned no parts; the plain loop answers"
    return made.model_copy(update={"functions": functions, "compose": compose, "note": note, **cost})


def parse_plan(text: str) -> tuple[list[PlannedFunction], str]:
    """The plan's functions and composition from a reply; :class:`PlanError` saying what is wrong.

    Tolerant of text around the JSON object (endpoints without a grammar); strict about its content: each
    function's name is an identifier that its signature defines, its test is Python that asserts."""
    start, stop = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start : stop + 1], strict=False) if start >= 0 else None
    except json.JSONDecodeError as exc:
        raise PlanError(f"not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
        raise PlanError('no "parts" list')
    if len(data["parts"]) > MAX_PARTS:
        raise PlanError(f"{len(data['parts'])} parts, more than {MAX_PARTS}")
    try:
        functions = [PlannedFunction.model_validate(part) for part in data["parts"]]
    except ValidationError as exc:
        raise PlanError(f"a part is not name, signature, contract, test: {exc.errors()[0]['msg']}") from None
    names = [f.name for f in functions]
    for f in functions:
        if not f.name.isidentifier() or names.count(f.name) > 1:
            raise PlanError(f"the function name {f.name!r} is not a unique Python name")
        if f"{f.name}(" not in f.signature:
            raise PlanError(f"the signature {f.signature!r} does not define {f.name}")
        _check_test(f)
    return functions, str(data.get("compose") or "")


def _check_test(function: PlannedFunction) -> None:
    try:
        tree = ast.parse(function.test)
    except SyntaxError as exc:
        raise PlanError(f"the test of {function.name} is not Python ({exc.msg})") from None
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        raise PlanError(f"the test of {function.name} asserts nothing")


def checked_test(test: str) -> str:
    """The plan's test, made to say what it got: ``assert f(x) == y`` fails with the value of ``f(x)``."""
    tree = ast.parse(test)
    last = tree.body[-1] if tree.body else None
    if (
        isinstance(last, ast.Assert)
        and last.msg is None
        and isinstance(last.test, ast.Compare)
        and len(last.test.ops) == 1
        and isinstance(last.test.ops[0], ast.Eq)
    ):
        got, expected = ast.unparse(last.test.left), ast.unparse(last.test.comparators[0])
        head = "".join(ast.unparse(node) + "\n" for node in tree.body[:-1])
        return (
            f"{head}__got = {got}\n__want = {expected}\n"
            f"assert __got == __want, {got + ' returned '!r} + repr(__got) + ', expected ' + repr(__want)"
        )
    return test


@dataclass
class _SubRuns:
    """Runs the loop on sub-questions as parts of one run: steps renumbered, limits shared, outcome kept."""

    model: ModelBackend
    session: Session
    on_result: ResultHook | None
    run_id: str
    totals: _Totals
    end: FinalAnswer | LimitReached | RunError | None = None
    """The last sub-run's outcome; a RunError or a run-wide limit ends the whole run."""

    async def run(self, question: str, history: list[Message], steps: int | None) -> AsyncIterator[Event]:
        """The loop on ``question`` with ``history``, at most ``steps`` steps (None: what is left)."""
        settings = self.totals.left(steps)
        if settings is None:
            self.end = self.totals.limit()
            return
        offset = self.totals.steps
        loop = run_agent(question, model=self.model, session=self.session, settings=settings,
                         history=history, run_id=self.run_id, on_result=self.on_result)  # fmt: skip
        async for event in loop:
            if isinstance(event, RunStarted):
                continue
            if isinstance(event, RunFinished):
                self.totals.steps, self.totals.tokens = (
                    offset + event.steps,
                    self.totals.tokens + event.tokens,
                )
                for key, count in event.feedback.items():
                    self.totals.feedback[key] = self.totals.feedback.get(key, 0) + count
                continue
            if isinstance(event, FinalAnswer | LimitReached | RunError):
                self.end = event
                continue
            step = getattr(event, "step", 0)
            yield event.model_copy(update={"step": step + offset}) if step else event

    @property
    def stopped(self) -> bool:
        """The run as a whole must stop: the machinery failed, or a run-wide limit was reached."""
        return isinstance(self.end, RunError) or (
            isinstance(self.end, LimitReached) and self.totals.left() is None
        )


async def _parts_then_compose(
    sub: _SubRuns, plan: PlanMade, question: str, system: str, messages: list[Message]
) -> AsyncIterator[Event]:
    """Each planned part, then the composing step in the caller's history; no parts: the plain loop."""
    if not plan.functions:
        async for event in sub.run(question, messages, None):
            yield event
        return
    passed: dict[str, bool] = {}
    for index, function in enumerate(plan.functions):
        budget = _part_budget(sub.totals, len(plan.functions) - index)
        if budget < 1:  # no steps left for parts: compose with what is there
            break
        async for event in _part(sub, function, question, system, budget):
            if isinstance(event, PartTested):
                passed[event.name] = event.passed
            yield event
        if sub.end is not None:  # the run must stop
            return
    async for event in sub.run(_compose_question(question, plan, passed), messages, None):
        yield event


def _part_budget(totals: _Totals, parts_left: int) -> int:
    """Steps for the next part: an equal share of those left after COMPOSE_STEPS, at most PART_STEPS."""
    left = totals.settings.agent.max_steps - totals.steps - COMPOSE_STEPS
    return min(PART_STEPS, left // parts_left)


async def _part(
    sub: _SubRuns, function: PlannedFunction, question: str, system: str, budget: int
) -> AsyncIterator[Event]:
    """Write ``function`` in a sub-run of at most ``budget`` steps, run its test; feed a failure back up to
    PART_RETRIES times while the budget lasts."""
    history: list[Message] = [{"role": "system", "content": system}]
    ask = PART_PROMPT.format(signature=function.signature, contract=function.contract, test=function.test,
                             context=question[:_CONTEXT_CHARS])  # fmt: skip
    start = sub.totals.steps
    for attempt in range(1, PART_RETRIES + 2):
        async for event in sub.run(ask, history, budget - (sub.totals.steps - start)):
            yield event
        if sub.stopped:
            return
        result = await sub.session.execute(checked_test(function.test), timeout=_TEST_TIMEOUT_S)
        error = "" if result.ok else _failure(result)
        yield PartTested(
            step=sub.totals.steps, name=function.name, passed=result.ok, attempt=attempt, error=error
        )
        if result.ok or sub.totals.steps - start >= budget:
            break
        ask = RETRY_PROMPT.format(error=error, name=function.name)
    sub.end = None  # a part's own answer or limit is not the run's outcome


def _failure(result: Any) -> str:
    if result.error is None:
        return "the test timed out" if result.timed_out else "the interpreter died"
    return prompts.cut_middle(f"{result.error.type}: {result.error.message}".strip(), 600)


def _compose_question(question: str, plan: PlanMade, passed: dict[str, bool]) -> str:
    lines = [question, "", "The session already defines these functions, each tested:"]
    for f in plan.functions:
        if f.name not in passed:
            note = " (not written yet: no steps were left for it; write it if you need it)"
        else:
            note = "" if passed[f.name] else " (its test failed: fix it before you use it)"
        lines.append(f"- {f.signature}: {f.contract}{note}")
    if plan.compose:
        lines.append(f"Plan: {plan.compose}")
    lines.append(COMPOSE_PROMPT[plan.orchestration])
    return "\n".join(lines)
