"""The arms: the same model answers the same item in different ways.

- ``direct``: one model call, no tools, a plain prompt asking for the answer only (files are inlined);
- ``code``: the agent (:func:`run_agent`) in a fresh sandbox session, told to work the answer out in
  Python;
- ``router``: the agent or the model decides per question whether code helps (``router.py``).

Each returns an :class:`Outcome` (data). A failure of the machinery (model endpoint down, sandbox gone)
raises :class:`~thinkbox.errors.ThinkboxError`: the runner stops, and what was done stays cached.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from thinkbox.agent import prompts
from thinkbox.agent.events import CodeStarted, FinalAnswer, RunError, RunFinished
from thinkbox.agent.loop import run_agent
from thinkbox.bench.reasoning.tasks import Item
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.base import Message, ModelBackend, ModelRequest, complete
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.session import Session

DIRECT_SYSTEM = (
    "Answer the user's question. Think silently; reply with the final answer only, no explanation, "
    "no working."
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


async def direct(item: Item, ctx: ArmContext, *, system: str = DIRECT_SYSTEM) -> Outcome:
    started = time.monotonic()
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": with_files(item)},
    ]
    model = ctx.settings.model
    limit = min(model.max_tokens, item.answer_tokens)
    request = ModelRequest(messages=messages, max_tokens=limit, temperature=model.temperature)
    reply = await complete(ctx.model, request)
    return Outcome(
        answer=reply.text.strip(),
        steps=1,
        tokens=reply.usage.total,
        wall_s=time.monotonic() - started,
        route="direct",
    )


async def agent(item: Item, ctx: ArmContext, *, hint: str = "", question: str | None = None) -> Outcome:
    """The agent in a fresh session with the item's files; ``hint`` is appended to the system prompt."""
    started = time.monotonic()
    outcome = Outcome(answer=None, route="agent")
    async with ctx.pool.lease() as session:
        for name, data in item.files.items():
            await session.put_file(name, data)
        history: list[Message] = [
            {"role": "system", "content": prompts.system_prompt(await session.list_files()) + hint}
        ]
        async for event in run_agent(
            question or item.question,
            model=ctx.model,
            session=session,
            settings=ctx.settings,
            history=history,
        ):
            if isinstance(event, CodeStarted):
                outcome.code_ran = True
            elif isinstance(event, FinalAnswer):
                outcome.answer = event.answer
            elif isinstance(event, RunError):
                raise RunFailed(event)
            elif isinstance(event, RunFinished):
                outcome.steps, outcome.tokens = event.steps, event.tokens
                outcome.stop = event.status
        if item.session_answer and not re.search(item.answer_pattern, outcome.answer or ""):
            await answer_from_session(item, session, outcome)
    outcome.wall_s = time.monotonic() - started
    return outcome


async def answer_from_session(item: Item, session: Session, outcome: Outcome) -> None:
    """The answer as the session holds it, when the final answer is not one (the 1.5B model tests the
    function it was asked to write, then answers with the value the test printed)."""
    result = await session.execute(item.session_answer, timeout=10)
    if result.ok and re.search(item.answer_pattern, result.stdout):
        outcome.answer, outcome.from_session = result.stdout, True
        outcome.notes.append("the answer is the session's code: the final answer was not")


async def code(item: Item, ctx: ArmContext) -> Outcome:
    outcome = await agent(item, ctx, hint=CODE_HINT)
    outcome.route = "code"
    return outcome
