"""Going on with a run from its recorded events, after the process that ran it died.

A run's events are its journal: they hold every action the model chose (``ActionParsed``), every
observation it was shown (``ExecutionFinished.observation``) and every re-ask. :func:`recorded_state`
turns them back into the loop's state (the conversation, the step, tokens, failed code), so the model is
not asked again for a step it already answered. The interpreter's state is not in the journal: it is
rebuilt by running the recorded cells again, in order, in a fresh session (:func:`replay`); files are
already on disk. Code with side effects outside the session (none today: sessions have no network) would
run twice.

A step cut short by the crash is finished without asking the model again when its action was recorded:
its code runs again, or its answer is given. A step whose action was not recorded is asked anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from thinkbox.agent import prompts
from thinkbox.agent.actions import Action
from thinkbox.agent.events import (
    ActionParsed,
    AnswerChecked,
    CodeRejected,
    CodeStarted,
    Event,
    ExecutionFinished,
    FilesPreviewed,
    ParseFailed,
    RunStarted,
    StepStarted,
)
from thinkbox.agent.reply_format import render
from thinkbox.config import AgentSettings
from thinkbox.models.base import Message
from thinkbox.sandbox.session import Session

_RAW_KEPT_CHARS = 2000  # as in the loop: what of an unusable reply stays in the history


@dataclass
class Cell:
    """Code that ran in the session, and whether it ran without error then."""

    code: str
    ok: bool
    language: str = "py"


@dataclass
class RecordedState:
    """The loop's state after the recorded events of one run."""

    question: str
    messages: list[Message] = field(default_factory=list)
    """This run's part of the conversation: the question, then per step the action and its observation."""
    step: int = 0
    tokens: int = 0
    errors: int = 0
    failed_code: dict[str, int] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    pending: Action | None = None
    """The last step's action, recorded but not carried out (its code did not finish, or the answer was
    not given): the loop carries it out without asking the model."""
    duration_s: float = 0.0
    retried: AnswerChecked | None = None
    """The critic's check that asked for the run's one retry, if it did (no second one after resuming)."""

    @property
    def what_next(self) -> str:
        if self.pending is None:
            return f"the model is asked for step {self.step + 1}"
        if self.pending.runs_code:
            return f"the code of step {self.step} runs again"
        return f"the answer of step {self.step} is given"


def recorded_state(
    events: Sequence[Event], reply_format: str | None = None, agent_language: str = "py"
) -> RecordedState:
    """The state after ``events`` (one run's, in order, starting with ``RunStarted``); the model's actions
    go into the history in ``reply_format`` (agent.reply_format, with agent.language; by default the
    setting's default)."""
    if reply_format is None:
        reply_format = AgentSettings.model_fields["reply_format"].default
    if not events or not isinstance(events[0], RunStarted):
        raise ValueError("a run's events start with run_started")
    state = RecordedState(question=events[0].question)
    state.messages.append({"role": "user", "content": state.question})
    failed: ParseFailed | None = None
    action: Action | None = None
    language = "py"
    started = events[0].ts
    for event in events[1:]:
        state.duration_s = max(state.duration_s, event.ts - started)
        if isinstance(event, StepStarted):
            _close_failed_step(state, failed, action)
            state.step, failed, action = event.step, None, None
        elif isinstance(event, ParseFailed):
            failed = event
            state.tokens = max(state.tokens, event.tokens)
        elif isinstance(event, ActionParsed):
            state.tokens = max(state.tokens, event.tokens)
            action = Action(thought=event.thought, action=event.action,  # type: ignore[arg-type]
                            code=event.code, final_answer=event.final_answer,
                            language=event.language)  # type: ignore[arg-type]  # fmt: skip
            text = render(action, reply_format, agent_language)
            state.messages.append({"role": "assistant", "content": text})
            state.pending = action
        elif isinstance(event, CodeStarted):
            state.pending = action
            language = event.language
        elif isinstance(event, AnswerChecked) and event.retry:  # the answer was refused: asked anew
            _add_user(state.messages, event.observation)
            state.retried, state.pending = event, None
        elif isinstance(event, FilesPreviewed):
            _add_user(state.messages, event.text)
        elif isinstance(event, CodeRejected):  # a failed step whose code did not run
            _add_user(state.messages, event.observation)
            state.errors += 1
            state.failed_code.setdefault(event.code.strip(), event.step)
            state.pending = None
        elif isinstance(event, ExecutionFinished):
            _add_user(state.messages, event.observation)
            ok = event.result.ok
            state.cells.append(Cell(action.code if action else "", ok, language))
            state.errors = 0 if ok else state.errors + 1
            if ok:
                state.failed_code.clear()
            elif action is not None:
                state.failed_code.setdefault(action.code.strip(), event.step)
            state.pending = None
    if action is None and state.step > 0:  # cut short before its action: the step is asked anew
        state.step -= 1
    return state


def _close_failed_step(state: RecordedState, failed: ParseFailed | None, action: Action | None) -> None:
    """A step that ended with no usable action: its last re-ask stays in the history, as the loop does."""
    if action is None and failed is not None:
        state.messages.append({"role": "assistant", "content": failed.raw[:_RAW_KEPT_CHARS]})
        state.messages.append({"role": "user", "content": prompts.reask(failed.error)})
        state.errors += 1


def _add_user(messages: list[Message], text: str) -> None:
    if messages and messages[-1]["role"] == "user":
        messages[-1] = {"role": "user", "content": messages[-1]["content"] + "\n\n" + text}
    else:
        messages.append({"role": "user", "content": text})


async def replay(session: Session, cells: Sequence[Cell], *, timeout: float | None = None) -> str | None:
    """Run ``cells`` again in ``session``, in order. None when the state is rebuilt, else why not: a cell
    that ran without error then fails now (its error named). Cells that failed then are run too (what they
    did before failing counts) and may fail again."""
    for number, cell in enumerate(cells, 1):
        if not cell.code.strip():
            continue
        result = await session.execute(cell.code, timeout=timeout, language=cell.language)  # type: ignore[arg-type]
        if cell.ok and not result.ok:
            why = result.error.type + ": " + result.error.message if result.error else "it timed out or died"
            return f"replaying cell {number} of {len(cells)} to rebuild the session failed ({why[:300]})"
        if result.killed:
            await session.restart()
            return f"replaying cell {number} of {len(cells)} killed the interpreter"
    return None
