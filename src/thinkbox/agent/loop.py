"""The CodeAct loop: query the model, parse its action, run the code, feed the result back, until it answers.

History, as in CodeAct: the system prompt, the user's question, then per step the assistant's action (as
written) and the execution result as a user message. The loop yields :mod:`thinkbox.agent.events` and never
renders anything. It stops at the first ``provide_answer`` or at a limit of :class:`AgentSettings` (steps,
wall time, consecutive failed steps, tokens) or of the model's context, saying which with a ``LimitReached``
event. Failures of the machinery (model endpoint down, sandbox gone) end the run with a ``RunError`` event;
errors *in the code* are observations for the model.

When a step prints nothing but its last line assigns plain names (``result = a * b``), the loop reads their
values back and shows them to the model: small models otherwise guess the value they did not print.
Code that failed before is not run again unchanged: the model is re-asked for a different attempt.
The rest of what the model is told besides outputs (file previews, lint, repeats, documentation after an
error) is :mod:`thinkbox.agent.feedback`, called at the run's start and before and after each execution;
a final answer passes :mod:`thinkbox.agent.critic` first, which may ask the model once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from thinkbox.agent import prompts, reply_format
from thinkbox.agent.actions import Action
from thinkbox.agent.critic import Critic
from thinkbox.agent.events import (
    ActionParsed,
    CodeRejected,
    CodeStarted,
    DisplayProduced,
    Event,
    ExecutionFinished,
    FinalAnswer,
    LimitName,
    LimitReached,
    OutputChunk,
    ParseFailed,
    RunError,
    RunFinished,
    RunResumed,
    RunStarted,
    StepStarted,
    ThoughtDelta,
)
from thinkbox.agent.feedback import Feedback
from thinkbox.agent.parse import InvalidAction, ParsedAction, ThoughtStream, parse_action
from thinkbox.agent.reply_format import history_text
from thinkbox.agent.resume import RecordedState
from thinkbox.config import Settings
from thinkbox.errors import AgentError, ContextOverflow, ThinkboxError
from thinkbox.models.base import Message, ModelBackend, ModelEvent, ModelReply, ModelRequest, TextDelta
from thinkbox.sandbox import types as sandbox_types
from thinkbox.sandbox.session import Session

_E = TypeVar("_E", FinalAnswer, LimitReached, RunError)
MAX_QUESTION_CHARS = 50_000
ResultHook = Callable[[sandbox_types.ExecutionResult], Awaitable[str]]
"""Told each execution's result; returns a note for the model's observation ('' for none)."""
_RAW_KEPT_CHARS = 2000  # of an unusable reply, kept in the history so the model sees what it wrote
REPEAT_TEMPERATURE = 1.0  # sampling for the re-ask after a reply that resent failed code


def check_question(question: str) -> str:
    """The question, stripped; :class:`AgentError` when it is empty or longer than MAX_QUESTION_CHARS."""
    text = question.strip()
    if not text:
        raise AgentError('the question is empty; ask something, e.g. thinkbox ask "What is 48271 * 9173?"')
    if len(text) > MAX_QUESTION_CHARS:
        raise AgentError(
            f"the question has {len(text):,} characters, more than the limit of {MAX_QUESTION_CHARS:,}; "
            "put long material in a file and pass it with --file"
        )
    return text


async def run_agent(
    question: str,
    *,
    model: ModelBackend,
    session: Session,
    settings: Settings,
    history: list[Message] | None = None,
    run_id: str | None = None,
    resume: RecordedState | None = None,
    on_result: ResultHook | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` by thinking in code; yield events as they happen.

    ``history``: the conversation so far (a chat); it is extended in place with this run's messages.
    When it is empty or None, it starts with the system prompt, which lists the workspace's files.
    ``resume``: the state recorded before the run's process died (:mod:`thinkbox.agent.resume`; the
    session's state already rebuilt): the run goes on from there, starting with ``RunResumed``.
    ``on_result``: called with each execution's result; what it returns is added to the model's
    observation (the service saves the tools that ``save_tool`` asked for there).
    """
    run = _Run(check_question(question), model, session, settings, history if history is not None else [])
    run.on_result = on_result
    run.run_id = run_id or uuid.uuid4().hex[:12]
    if resume is None:
        files = await _start_history(run)
        yield RunStarted(run_id=run.run_id, question=run.question, model=model.name,
                         sandbox=session.backend.name, files=files)  # fmt: skip
        for event in await _start_feedback(run, files):
            yield event
    else:
        yield await _resume(run, resume)
    end: Event | None = None
    try:
        while (end := run.limit_reached()) is None:
            async for event in _next_action(run):
                yield event
            if run.action is None:
                continue
            if not run.action.runs_code:
                room = run.step < run.settings.agent.max_steps
                if checked := await run.critic.review(run.step, run.action.final_answer, run.messages,
                                                      run.question, room=room):  # fmt: skip
                    yield checked
                    if checked.retry:
                        run.add_user(checked.observation)
                        continue
                end = run.event(FinalAnswer, answer=run.action.final_answer.strip())
                break
            async for event in _execute(run, run.action):
                yield event
    except _WallTime:
        end = run.limit("wall_time")
    except ContextOverflow as exc:
        end = run.limit("context", detail=exc.message)
    except ThinkboxError as exc:
        end = run.event(RunError, code=exc.code, message=exc.message, retryable=exc.retryable)
    if isinstance(end, LimitReached) and (kept := run.critic.kept(run.step)) is not None:
        yield kept  # the critic's retry ran out: the first answer stands
        end = run.event(FinalAnswer, answer=kept.answer)
    yield end
    yield run.finished(end)


@dataclass
class _Run:
    """The state of one run; small methods keep the loop above on one screen."""

    question: str
    model: ModelBackend
    session: Session
    settings: Settings
    messages: list[Message]
    run_id: str = ""
    step: int = 0
    tokens: int = 0
    errors: int = 0
    action: Action | None = None
    pending: Action | None = None  # a resumed run's recorded action, carried out without asking the model
    failed_code: dict[str, int] = field(default_factory=dict)  # failed since the last success: code -> step
    on_result: ResultHook | None = None
    started: float = field(default_factory=time.monotonic)
    deadline: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    feedback: Feedback = field(init=False)
    critic: Critic = field(init=False)

    def __post_init__(self) -> None:
        self.deadline += self.settings.agent.max_wall_s
        self.feedback = Feedback(self.settings.agent, self.session)
        self.critic = Critic(self.settings.agent, self.session, self.feedback.counts)

    @property
    def language(self) -> str:
        """agent.language: py, js, sh, or auto (the model names each step's language)."""
        return self.settings.agent.language

    def system_prompt(self, files: list[sandbox_types.FileInfo]) -> str:
        return reply_format.system_prompt(files, self.language, self.settings.agent.reply_format)

    def reask(self, problem: str) -> str:
        return reply_format.reask(problem, self.settings.agent.reply_format, self.language)

    def code_language(self, action: Action) -> sandbox_types.Language:
        if self.language == "auto":
            return action.language or "py"
        return cast(sandbox_types.Language, self.language)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def wall_left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    def limit_reached(self) -> LimitReached | None:
        agent = self.settings.agent
        if self.step >= agent.max_steps and self.pending is None:
            return self.limit("steps")
        if self.wall_left <= 0:
            return self.limit("wall_time")
        if self.tokens >= agent.max_tokens:
            return self.limit("tokens")
        if self.errors >= agent.max_consecutive_errors:
            return self.limit("consecutive_errors")
        return None

    def limit(self, name: LimitName, detail: str = "") -> LimitReached:
        agent = self.settings.agent
        what = {
            "steps": f"{agent.max_steps} steps were used (agent.max_steps, --max-steps)",
            "wall_time": f"the run took longer than {agent.max_wall_s:g} s (agent.max_wall_s)",
            "tokens": f"{self.tokens:,} tokens were used, more than {agent.max_tokens:,} (agent.max_tokens)",
            "consecutive_errors": f"{self.errors} steps in a row failed (agent.max_consecutive_errors)",
            "context": f"the conversation outgrew the model's context: {detail}",
        }[name]
        return self.event(LimitReached, limit=name, message=f"stopped without an answer: {what}")

    def event(self, cls: type[_E], **fields: Any) -> _E:
        return cls(steps=self.step, duration_s=round(self.elapsed, 3), tokens=self.tokens, **fields)

    def finished(self, end: Event) -> RunFinished:
        status = {"final_answer": "answered", "limit_reached": "limit"}.get(end.type, "error")
        answer = end.answer if isinstance(end, FinalAnswer) else None
        return RunFinished(run_id=self.run_id, status=status, answer=answer, steps=self.step,  # type: ignore[arg-type]
                           duration_s=round(self.elapsed, 3), tokens=self.tokens,
                           feedback=self.feedback.summary())  # fmt: skip

    def add_user(self, text: str) -> None:
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1] = {"role": "user", "content": self.messages[-1]["content"] + "\n\n" + text}
        else:
            self.messages.append({"role": "user", "content": text})


async def _start_history(run: _Run) -> list[str]:
    files = await run.session.list_files()
    if not run.messages:
        run.messages.append({"role": "system", "content": run.system_prompt(files)})
    run.add_user(run.question)
    return [f.path for f in files if not f.is_dir and not prompts.is_hidden(f.path)]


async def _start_feedback(run: _Run, files: list[str]) -> list[Event]:
    """The files' previews follow the question; the events say what was told."""
    text, events = await run.feedback.start(run.messages, files)
    if text:
        run.add_user(text)
    return events


async def _resume(run: _Run, state: RecordedState) -> RunResumed:
    """Seed ``run`` with the recorded state (the history gets the system prompt if it has none)."""
    if not run.messages:
        run.messages.append({"role": "system", "content": run.system_prompt(await run.session.list_files())})
    run.messages.extend(state.messages)
    run.step, run.tokens, run.errors = state.step, state.tokens, state.errors
    run.failed_code, run.pending = dict(state.failed_code), state.pending
    run.critic.resumed(state.retried)
    run.started -= state.duration_s
    run.deadline -= state.duration_s
    replayed = sum(1 for cell in state.cells if cell.code.strip())
    return RunResumed(run_id=run.run_id, step=state.step, replayed_cells=replayed, message=state.what_next)


async def _next_action(run: _Run) -> AsyncIterator[Event]:
    """The next step's action into ``run.action``: the pending one of a resumed run, else the model's."""
    if run.pending is not None:
        run.action, run.pending = run.pending, None
        return
    run.step += 1
    yield StepStarted(step=run.step)
    async for event in _query(run):
        yield event


async def _query(run: _Run) -> AsyncIterator[Event]:
    """Ask the model for this step's action, re-asking up to ``max_parse_retries`` times.

    A reply that is not a valid action is re-asked with the reason. So is code that already failed, unchanged,
    with no successful step since: greedy small models resend it until a limit, so the re-ask samples at
    ``REPEAT_TEMPERATURE`` (seeded by the attempt number) for a different attempt.
    Sets ``run.action`` (None when every attempt failed: the step counts as failed)."""
    run.action, pending = None, list[Message]()
    sampling: dict[str, Any] = {}
    for attempt in range(1, run.settings.agent.max_parse_retries + 2):
        thoughts, reply = ThoughtStream(), None
        request = _request(run, pending, **sampling)
        async for item in _until(run.model.stream(request), run.deadline):
            if isinstance(item, TextDelta):
                if text := thoughts.feed(item.text):
                    yield ThoughtDelta(step=run.step, text=text)
            else:
                reply = item
        reply = _require_reply(reply, run.model)
        run.tokens += reply.usage.total
        try:
            parsed = parse_action(reply.text, run.settings.agent.reply_format)
            _refuse_repeat(run, parsed.action)
        except InvalidAction as exc:
            problem = exc.problem + _cut_note(reply, run)
            yield ParseFailed(step=run.step, attempt=attempt, error=problem, raw=reply.text,
                              tokens=run.tokens)  # fmt: skip
            pending = [{"role": "assistant", "content": reply.text[:_RAW_KEPT_CHARS]},
                       {"role": "user", "content": run.reask(problem)}]  # fmt: skip
            if isinstance(exc, _RepeatedCode):
                hotter = max(run.settings.model.temperature, REPEAT_TEMPERATURE)
                sampling = {"temperature": hotter, "seed": attempt}
            if run.tokens >= run.settings.agent.max_tokens or run.wall_left <= 0:
                break
            continue
        run.action = parsed.action
        text = history_text(reply.text, parsed.action, parsed.repairs, run.settings.agent.reply_format,
                            run.language)  # fmt: skip
        run.messages.append({"role": "assistant", "content": text})
        yield _action_event(run.step, parsed, run.tokens)
        return
    run.errors += 1
    run.messages.extend(pending)


class _RepeatedCode(InvalidAction):
    """The action's code is the code of an earlier step that failed, unchanged."""


def _refuse_repeat(run: _Run, action: Action) -> None:
    earlier = run.failed_code.get(action.code.strip()) if action.runs_code else None
    if earlier is not None:
        raise _RepeatedCode(prompts.repeated_code(earlier))
    if action.runs_code and (why := run.feedback.refusal(action.code, run.code_language(action))):
        raise _RepeatedCode(why)


def _cut_note(reply: ModelReply, run: _Run) -> str:
    if reply.finish_reason != "length":
        return ""
    return f" (the reply reached the limit of {run.settings.model.max_tokens} tokens: write less)"


def _action_event(step: int, parsed: ParsedAction, tokens: int) -> ActionParsed:
    a = parsed.action
    code, answer = (a.code, "") if a.runs_code else ("", a.final_answer)
    repairs = list(parsed.repairs)
    return ActionParsed(
        step=step,
        thought=a.thought,
        action=a.action,
        code=code,
        final_answer=answer,
        language=a.language,
        repairs=repairs,
        tokens=tokens,
    )


def action_request(messages: list[Message], settings: Settings) -> ModelRequest:
    """The request for one action: ``messages`` under the action schema, with the model settings' limits."""
    model, agent = settings.model, settings.agent
    schema = reply_format.action_schema(agent.reply_format, agent.language)
    return ModelRequest(messages=messages, json_schema=schema, max_tokens=model.max_tokens,
                        temperature=model.temperature)  # fmt: skip


def _request(run: _Run, pending: list[Message], **sampling: Any) -> ModelRequest:
    """The step's request; ``sampling``: temperature and seed instead of the settings' (a re-ask)."""
    return dataclasses.replace(action_request([*run.messages, *pending], run.settings), **sampling)


def _require_reply(reply: ModelReply | None, model: ModelBackend) -> ModelReply:
    if reply is None:
        raise AgentError(f"model backend {model.name!r} ended its stream without a reply")
    return reply


class _WallTime(Exception):
    """The run's wall time ran out while waiting for the model."""


async def _until(stream: AsyncIterator[ModelEvent], deadline: float) -> AsyncIterator[ModelEvent]:
    """``stream`` with a deadline (event-loop time) on each item; :class:`_WallTime` past it."""
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _WallTime from None
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _execute(run: _Run, action: Action) -> AsyncIterator[Event]:
    """Run the action's code, stream what it prints, tell the model what happened."""
    language = run.code_language(action)
    if (rejected := await run.feedback.check(run.step, action.code, language)) is not None:
        yield _rejected(run, rejected)
        return
    yield CodeStarted(step=run.step, code=action.code, language=language)
    limits = run.session.config.limits
    timeout = max(min(limits.timeout_s, run.wall_left), 0.5)
    result: sandbox_types.ExecutionResult | None = None
    figures = 0
    async for item in run.session.stream(action.code, timeout=timeout, language=language):
        if isinstance(item, sandbox_types.OutputChunk):
            yield OutputChunk(step=run.step, name=item.name, text=item.text)
        elif isinstance(item, sandbox_types.DisplayData):
            figures += any(m.startswith("image/") for m in item.mime)
            yield DisplayProduced(step=run.step, mime=item.mime)
        else:
            result = item
    assert result is not None
    restarted = result.killed
    if restarted:
        await run.session.restart()
    max_chars = run.settings.agent.observation_chars
    python = language == "py"  # the guards below read Python
    assigned = await _peek_assigned(run, action.code, result) if python else ""
    note = await run.on_result(result) if run.on_result is not None else ""
    notices = await run.feedback.after(run.step, action.code, language, result)
    note = "\n".join([note, *(n.message for n in notices if n.kind == "docs")]).strip()
    observation = prompts.observation(
        result,
        max_chars=max_chars,
        timeout_s=timeout,
        restarted=restarted,
        figures=figures,
        assigned=assigned,
        defined=prompts.defined_names(action.code) if python else [],
        note=note,
    )
    observation = next((n.message for n in notices if n.kind == "repeat"), observation)
    for notice in notices:
        yield notice
    run.add_user(observation)
    run.errors = 0 if result.ok else run.errors + 1
    if result.ok:  # the session's state changed: failed code may work now
        run.failed_code.clear()
    else:
        run.failed_code.setdefault(action.code.strip(), run.step)
    yield ExecutionFinished(
        step=run.step,
        result=result.model_copy(update={"display": []}),
        observation=observation,
        session_restarted=restarted,
        assigned=assigned,
    )


def _rejected(run: _Run, rejected: CodeRejected) -> CodeRejected:
    """Code refused before running is a failed step: told why, counted, not accepted again unchanged."""
    run.add_user(rejected.observation)
    run.errors += 1
    run.failed_code.setdefault(rejected.code.strip(), run.step)
    return rejected


async def _peek_assigned(run: _Run, code: str, result: sandbox_types.ExecutionResult) -> str:
    """When the code ran, printed nothing and ended with an assignment: the assigned values, else ''."""
    if not result.ok or result.stdout.strip() or result.stderr.strip() or result.result is not None:
        return ""
    names = prompts.assigned_names(code)
    if not names:
        return ""
    peek = await run.session.execute(prompts.peek_code(names), timeout=5)
    return peek.stdout if peek.ok else ""
