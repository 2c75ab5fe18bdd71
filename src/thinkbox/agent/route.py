"""Routing: per question, answer directly (one model call, no code) or think in code (the loop).

:func:`run_routed` is what ``thinkbox ask``/``chat`` and the service's runs call. It yields the events of
:func:`~thinkbox.agent.loop.run_agent` plus :class:`~thinkbox.agent.events.RouteChosen`, saying which route
was taken and why. The route comes from ``--route`` / the run's ``route`` field / ``agent.route``:

- ``code``: the loop, as it is;
- ``direct``: one model call under :data:`DIRECT_SYSTEM`, no code run;
- ``auto``: the model decides, in three stages that the benchmark measured (``docs/bench/route.md``):

  1. a question that comes with files goes to code (only code reads them);
  2. a short label call asks whether the answer is a *program* to write or a *value*. A program goes
     direct: the small model's functions written in the loop scored worse than its direct ones. The call
     is the chat so far with the label question as the last message, so a local model reuses the system
     prompt it has already evaluated (only a few dozen new tokens);
  3. for a value, the loop starts; its first action decides: code means the code route goes on (nothing
     wasted: that action is the loop's own first step), an answer without code means the direct route
     answers instead. When the code route stops at a limit without an answer, the direct route answers
     (``fallback``), so a question the model cannot code its way through still gets an answer.

Under ``code``, ``agent.decompose`` (chain or class) plans the question as tested functions first
(:mod:`thinkbox.agent.decompose`). When ``search.provider`` is set, the code route's session gets
``web_search(query)`` (:mod:`thinkbox.agent.search`). Each decision's own model cost (tokens, seconds)
is in its ``RouteChosen`` event and counted in the run's totals. A resumed run (the service, after a
crash) goes on in code: only code runs leave steps to resume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from thinkbox.agent import reply_format, search
from thinkbox.agent.actions import Action
from thinkbox.agent.decompose import run_decomposed
from thinkbox.agent.events import (
    ActionParsed,
    Event,
    FinalAnswer,
    LimitReached,
    RouteChosen,
    RunError,
    RunFinished,
    RunStarted,
)
from thinkbox.agent.loop import ResultHook, run_agent
from thinkbox.agent.resume import RecordedState
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.base import Message, ModelBackend, ModelRequest, complete
from thinkbox.sandbox.session import Session

Route = Literal["code", "direct", "auto"]
ROUTES: tuple[str, ...] = ("code", "direct", "auto")

DIRECT_SYSTEM = (
    "Answer the user's question. Think silently; reply with the final answer only, no explanation, "
    "no working."
)
KIND_PROMPT = """\
Is the answer to the question below a piece of program code that you are asked to write (for example a \
function definition), or a value (a number, a word, a date, a list)?

Question: {question}

Reply with one JSON object: {{"answer_is": "program"}} or {{"answer_is": "value"}}."""
KIND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer_is": {"type": "string", "enum": ["program", "value"]}},
    "required": ["answer_is"],
    "additionalProperties": False,
}
_KIND_QUESTION_CHARS = 3000


@dataclass
class _Spent:
    """Steps, tokens and the decisions' cost of one routed run, for its totals."""

    started: float
    steps: int = 0
    tokens: int = 0

    @property
    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)


async def run_routed(
    question: str,
    *,
    model: ModelBackend,
    session: Session,
    settings: Settings,
    route: Route | None = None,
    history: list[Message] | None = None,
    run_id: str | None = None,
    resume: RecordedState | None = None,
    on_result: ResultHook | None = None,
    direct_max_tokens: int | None = None,
    has_files: bool | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` by the route ``route`` (None: ``agent.route``); yield the run's events.

    The arguments are :func:`run_agent`'s; ``direct_max_tokens`` bounds the direct answer (default:
    ``model.max_tokens``); ``has_files``: the question is about files (None: the workspace has some at the
    start; the service passes whether the run named any, as a user's folder holds files of other runs).
    ``history`` is extended in place, also by a direct answer (as a
    ``provide_answer`` action), so a chat goes on the same way whichever route each question took."""
    chosen = route or settings.agent.route
    messages = history if history is not None else []
    spent = _Spent(time.monotonic())
    if chosen != "direct" and (web := search.configured(settings)) is not None:
        form, language = settings.agent.reply_format, settings.agent.language
        system = reply_format.system_prompt(await session.list_files(), language, form)
        on_result = await search.prepare(web, session, messages, system, on_result)
    if chosen == "code" and resume is None and settings.agent.decompose != "off":
        why = f"the route is set to code (--route or agent.route), decomposed ({settings.agent.decompose})"
        async for event in run_decomposed(question, model=model, session=session, settings=settings,
                                          history=messages, run_id=run_id, on_result=on_result):  # fmt: skip
            yield event
            if isinstance(event, RunStarted):
                yield RouteChosen(route="code", reason=why)
        return
    agent = cast(
        AsyncGenerator[Event, None],
        run_agent(
            question,
            model=model,
            session=session,
            settings=settings,
            history=messages,
            run_id=run_id,
            resume=resume,
            on_result=on_result,
        ),
    )
    direct = _Direct(model, settings, messages, direct_max_tokens, spent)
    try:
        if resume is not None:
            async for event in agent:
                yield event
            return
        start = await anext(agent)  # RunStarted: the history now ends with the question
        yield start
        assert isinstance(start, RunStarted)
        direct.run_id = start.run_id
        if chosen == "code":
            yield RouteChosen(route="code", reason="the route is set to code (--route or agent.route)")
            async for event in agent:
                yield event
        elif chosen == "direct":
            await agent.aclose()
            yield RouteChosen(route="direct", reason="the route is set to direct (--route or agent.route)")
            async for event in direct.answer():
                yield event
        else:
            files = bool(start.files) if has_files is None else has_files
            async for event in _auto(agent, direct, start, files):
                yield event
    finally:
        await agent.aclose()


async def _auto(
    agent: AsyncGenerator[Event, None], direct: _Direct, start: RunStarted, files: bool
) -> AsyncIterator[Event]:
    """The ``auto`` route (the module docstring's three stages)."""
    spent = direct.spent
    if files:
        yield RouteChosen(route="code", reason="the question comes with files, which code reads")
        async for event in agent:
            yield event
        return
    label, tokens, seconds = await _kind(direct, start.question)
    spent.tokens += tokens
    if label == "program":
        await agent.aclose()
        why = "the answer is a program to write: the model writes those better directly than in the loop"
        yield RouteChosen(route="direct", reason=why, tokens=tokens, duration_s=seconds)
        async for event in direct.answer():
            yield event
        return
    decided = False
    async for event in agent:
        if isinstance(event, ActionParsed) and not decided:
            decided = True
            yield event
            if event.action == "provide_answer":
                spent.steps, spent.tokens = event.step, spent.tokens + event.tokens
                why = f"the answer is a value, and the model answered it at step {event.step} without code"
                yield RouteChosen(route="direct", reason=why, tokens=tokens, duration_s=seconds)
                break
            why = "the answer is a value, and the model chose to compute it"
            yield RouteChosen(route="code", reason=why, tokens=tokens, duration_s=seconds)
            continue
        if isinstance(event, LimitReached):
            spent.steps, spent.tokens = event.steps, spent.tokens + event.tokens
            why = f"the code route {event.message}; answered directly instead"
            yield RouteChosen(route="direct", reason=why)
            break
        yield _with_tokens(event, tokens)
    else:
        return
    await agent.aclose()
    async for event in direct.answer():
        yield event


def _with_tokens(event: Event, tokens: int) -> Event:
    """``event`` with the routing's own tokens added to the run's totals (outcome events)."""
    if tokens and isinstance(event, FinalAnswer | LimitReached | RunError | RunFinished):
        return event.model_copy(update={"tokens": event.tokens + tokens})
    return event


async def _kind(direct: _Direct, question: str) -> tuple[str, int, float]:
    """The label call: ("program" | "value", its tokens, its seconds)."""
    started = time.monotonic()
    prompt = KIND_PROMPT.format(question=question[:_KIND_QUESTION_CHARS])
    request = ModelRequest(
        messages=[*direct.messages[:-1], {"role": "user", "content": prompt}],
        json_schema=KIND_SCHEMA,
        max_tokens=16,
        temperature=direct.settings.model.temperature,
    )
    reply = await complete(direct.model, request)
    label = "program" if "program" in reply.text else "value"
    return label, reply.usage.total, round(time.monotonic() - started, 3)


@dataclass
class _Direct:
    """The direct route: one model call, the answer as the run's outcome."""

    model: ModelBackend
    settings: Settings
    messages: list[Message]
    max_tokens: int | None
    spent: _Spent
    run_id: str = ""

    async def answer(self) -> AsyncIterator[Event]:
        spent = self.spent
        question = next(m["content"] for m in reversed(self.messages) if m["role"] == "user")
        if self.messages and self.messages[-1]["role"] == "assistant":  # the loop's own step-1 answer
            self.messages.pop()
        request = ModelRequest(
            messages=[{"role": "system", "content": DIRECT_SYSTEM}, {"role": "user", "content": question}],
            max_tokens=min(self.max_tokens or self.settings.model.max_tokens, self.settings.model.max_tokens),
            temperature=self.settings.model.temperature,
        )
        spent.steps += 1
        end: FinalAnswer | LimitReached | RunError
        wall = self.settings.agent.max_wall_s  # what is left of it, or a minute after a code route's limit
        try:
            async with asyncio.timeout(max(wall - spent.elapsed, min(wall, 60.0))):
                reply = await complete(self.model, request)
        except TimeoutError:
            limit = self.settings.agent.max_wall_s
            message = f"stopped without an answer: the run took longer than {limit:g} s (agent.max_wall_s)"
            end = LimitReached(limit="wall_time", message=message, steps=spent.steps,
                               duration_s=spent.elapsed, tokens=spent.tokens)  # fmt: skip
        except ThinkboxError as exc:
            end = RunError(code=exc.code, message=exc.message, retryable=exc.retryable, steps=spent.steps,
                           duration_s=spent.elapsed, tokens=spent.tokens)  # fmt: skip
        else:
            spent.tokens += reply.usage.total
            text = reply.text.strip() or "(no answer)"
            action = Action(
                thought="answered directly, without code", action="provide_answer", final_answer=text
            )
            agent = self.settings.agent
            rendered = reply_format.render(action, agent.reply_format, agent.language)
            self.messages.append({"role": "assistant", "content": rendered})
            end = FinalAnswer(answer=text, steps=spent.steps, duration_s=spent.elapsed, tokens=spent.tokens)
        yield end
        status = {"final_answer": "answered", "limit_reached": "limit"}.get(end.type, "error")
        answer = end.answer if isinstance(end, FinalAnswer) else None
        yield RunFinished(run_id=self.run_id, status=status, answer=answer, steps=spent.steps,  # type: ignore[arg-type]
                          duration_s=spent.elapsed, tokens=spent.tokens)  # fmt: skip
