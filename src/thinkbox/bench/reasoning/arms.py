"""The arms: the same model answers the same item in different ways.

- ``direct``: one model call, no tools, as a plain chat would answer: it may reason briefly, then ends
  with an ``Answer:`` line (files are inlined; the item's answer budget, :attr:`Item.answer_tokens`);
- ``cot``: one model call, no tools, told to reason step by step in text (no code runs) with the budget
  of one agent step (``model.max_tokens``), then an ``Answer:`` line;
- ``code``: the agent (:func:`run_agent`; under agent.decompose, :func:`run_decomposed`) in a fresh
  sandbox session, told to work the answer out in code (agent.language);
- ``code:py``, ``code:js``, ``code:both``: the agent in one language, or both compared (``languages.py``);
- ``router``: the agent or the model decides per question whether code helps (``router.py``).

Each returns an :class:`Outcome` (data). A failure of the machinery (model endpoint down, sandbox gone)
raises :class:`~thinkbox.errors.ThinkboxError`: the runner stops, and what was done stays cached.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from thinkbox.agent import reply_format
from thinkbox.agent.decompose import run_decomposed
from thinkbox.agent.events import (
    AnswerChecked,
    CodeRejected,
    CodeStarted,
    ExecutionFinished,
    FinalAnswer,
    ParseFailed,
    RunError,
    RunFinished,
)
from thinkbox.agent.loop import run_agent
from thinkbox.bench.reasoning.report import Attempt
from thinkbox.bench.reasoning.tasks import Item, final_line_answer
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.base import Message, ModelBackend, ModelRequest, complete
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Language

DIRECT_SYSTEM = (
    "Answer the user's question. You may think briefly first. End with a last line of the form "
    "'Answer: <the answer>'; when the answer is program code, end with the code instead."
)
COT_SYSTEM = (
    "Answer the user's question. Reason step by step in plain text, writing out every intermediate "
    "result. Do not write code: nothing runs it. Then check your result. End with a last line of the form "
    "'Answer: <the answer>'; when the answer is program code, end with the code instead."
)
CODE_HINT = (
    "\n\nFor every question in this session: work the answer out with Python (execute_code) before you "
    "give it with provide_answer."
)


@dataclass
class Outcome:
    """How one arm answered one item."""

    answer: str | None
    """None when the agent stopped at a limit without answering."""
    code_ran: bool = False
    steps: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    stop: str = "answered"
    """answered | limit (the agent hit a limit)."""
    route: str | None = None
    """For the router: which way it went (direct | code | agent)."""
    from_session: bool = False
    """The answer is what the session held (:attr:`Item.session_answer`), not the final answer."""
    notes: list[str] = field(default_factory=list)
    route_tokens: int = 0
    """For the router: tokens its decisions cost (included in ``tokens``)."""
    route_s: float = 0.0
    """For the router: seconds its decisions took (included in ``wall_s``)."""
    reply: str | None = None
    """The whole reply of an arm that answers in text (direct, cot), the answer being read from it."""
    agreed: bool | None = None
    """code:both: whether the Python and JavaScript answers agreed (None for other arms)."""
    attempts: list[Attempt] = field(default_factory=list)
    """code:both: its attempts in order (Python, JavaScript, and the third when run); the runner scores
    each."""


Earlier = Callable[[Item, str], "Outcome | None"]
"""What an arm (``direct`` or ``code``) already gave for an item in this run, if it is known."""


@dataclass
class ArmContext:
    model: ModelBackend
    settings: Settings
    pool: SessionPool
    earlier: Earlier | None = None
    """Set by the runner when decoding is greedy (temperature 0): the same request then gives the same
    answer, so a router may take an arm's result instead of asking again."""


class RunFailed(ThinkboxError):
    """The agent's run ended with a RunError: the machinery failed, not the model's answer."""

    code = "bench_run_failed"

    def __init__(self, error: RunError) -> None:
        super().__init__(f"{error.code}: {error.message}", retryable=error.retryable)
        self.code = error.code


def with_files(item: Item) -> str:
    """The question with the item's files inlined (for arms without a workspace)."""
    parts = [item.question]
    for name, data in item.files.items():
        parts.append(f"\nContents of {name}:\n{data.decode('utf-8', 'replace')}")
    return "\n".join(parts)


def text_answer(item: Item, text: str) -> str:
    """The answer in a reply written in text: the whole reply when it holds the program the item asks
    for (HumanEval), else its last ``Answer:`` line (the whole reply when there is none)."""
    if item.answer_pattern and re.search(item.answer_pattern, text):
        return text.strip()
    return final_line_answer(text)


async def in_text(item: Item, ctx: ArmContext, *, system: str, max_tokens: int, route: str) -> Outcome:
    """One model call without tools; the reply's answer is read by :func:`text_answer`."""
    started = time.monotonic()
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": with_files(item)},
    ]
    temperature = ctx.settings.model.temperature
    request = ModelRequest(messages=messages, max_tokens=max_tokens, temperature=temperature)
    reply = await complete(ctx.model, request)
    outcome = Outcome(
        answer=text_answer(item, reply.text),
        steps=1,
        tokens=reply.usage.total,
        wall_s=time.monotonic() - started,
        route=route,
        reply=reply.text,
    )
    if reply.finish_reason == "length":
        outcome.notes.append(f"the reply reached its limit of {max_tokens} tokens")
    return outcome


async def direct(item: Item, ctx: ArmContext, *, system: str | None = None) -> Outcome:
    limit = min(ctx.settings.model.max_tokens, item.answer_tokens)
    return await in_text(item, ctx, system=system or DIRECT_SYSTEM, max_tokens=limit, route="direct")


async def cot(item: Item, ctx: ArmContext) -> Outcome:
    """Chain of thought: the budget of one agent step (model.max_tokens), no code."""
    return await in_text(item, ctx, system=COT_SYSTEM, max_tokens=ctx.settings.model.max_tokens, route="cot")


async def agent(
    item: Item, ctx: ArmContext, *, hint: str = "", question: str | None = None, language: str | None = None
) -> Outcome:
    """The agent in a fresh session with the item's files; ``hint`` is appended to the system prompt.
    ``language``: the agent's language for this run (py, js, sh, auto); None: agent.language."""
    started = time.monotonic()
    outcome = Outcome(answer=None, route="agent")
    settings = ctx.settings
    if language is not None and language != settings.agent.language:
        agent_settings = settings.agent.model_copy(update={"language": language})
        settings = settings.model_copy(update={"agent": agent_settings})
    async with ctx.pool.lease() as session:
        for name, data in item.files.items():
            await session.put_file(name, data)
        files, agent = await session.list_files(), settings.agent
        system = reply_format.system_prompt(files, agent.language, agent.reply_format) + hint
        history: list[Message] = [{"role": "system", "content": system}]
        run = run_agent if settings.agent.decompose == "off" else run_decomposed
        async for event in run(
            question or item.question,
            model=ctx.model,
            session=session,
            settings=settings,
            history=history,
        ):
            if isinstance(event, CodeStarted):
                outcome.code_ran = True
            elif isinstance(event, ParseFailed | CodeRejected | ExecutionFinished):
                outcome.notes += step_notes(event)
            elif isinstance(event, FinalAnswer):
                outcome.answer = event.answer
            elif isinstance(event, AnswerChecked) and not event.passed:  # the critic's, kept in the results
                verdict = "retry" if event.retry else "stands"
                problems = "; ".join(event.problems)
                outcome.notes.append(f"critic {verdict} on {event.answer[:200]!r}: {problems}")
            elif isinstance(event, RunError):
                raise RunFailed(event)
            elif isinstance(event, RunFinished):
                outcome.steps, outcome.tokens = event.steps, event.tokens
                outcome.stop = event.status
        if item.session_answer and not re.search(item.answer_pattern, outcome.answer or ""):
            await answer_from_session(item, session, outcome, settings.agent.language)
    outcome.wall_s = time.monotonic() - started
    return outcome


def step_notes(event: ParseFailed | CodeRejected | ExecutionFinished) -> list[str]:
    """What went wrong in a step, as notes of the item's result (counted by docs/bench/reply-format.md):
    an unusable reply, code refused before running (a syntax error or an undefined name), a syntax error
    raised by running code."""
    if isinstance(event, ParseFailed):
        return ["step: reply unusable"]
    if isinstance(event, CodeRejected):
        syntax = any("SyntaxError" in p for p in event.problems)
        return [f"step: code rejected ({'syntax error' if syntax else 'undefined name'})"]
    error = event.result.error
    if error is not None and error.type in ("SyntaxError", "IndentationError", "TabError"):
        return [f"step: code raised {error.type}"]
    return []


async def answer_from_session(item: Item, session: Session, outcome: Outcome, language: str = "py") -> None:
    """The answer as the session holds it, when the final answer is not one (the 1.5B model tests the
    function it was asked to write, then answers with the value the test printed). ``language``: the
    agent's, whose interpreter holds the functions (``item.session_answer`` is written for it)."""
    lang: Language = "js" if language == "js" else "sh" if language == "sh" else "py"
    result = await session.execute(item.session_answer, timeout=10, language=lang)
    if result.ok and re.search(item.answer_pattern, result.stdout):
        outcome.answer, outcome.from_session = result.stdout, True
        outcome.notes.append("the answer is the session's code: the final answer was not")


async def code(item: Item, ctx: ArmContext) -> Outcome:
    outcome = await agent(item, ctx, hint=CODE_HINT)
    outcome.route = "code"
    return outcome
