"""Resuming a run from its recorded events: the model is not asked again for recorded steps, the session's
state is rebuilt by replaying the recorded cells in a fresh real session, and the run finishes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_support import make_settings

from thinkbox.agent.events import (
    ActionParsed,
    CodeStarted,
    Event,
    ExecutionFinished,
    FinalAnswer,
    RunFinished,
    RunResumed,
    StepStarted,
)
from thinkbox.agent.loop import run_agent
from thinkbox.agent.resume import recorded_state, replay
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPLIES = [
    {"thought": "start", "action": "execute_code", "code": "x = 6", "final_answer": ""},
    {"thought": "oops", "action": "execute_code", "code": "y = x * int('seven')", "final_answer": ""},
    {"thought": "multiply", "action": "execute_code", "code": "y = x * 7\nprint(y)", "final_answer": ""},
    {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "42"},
]


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


def cut_after(events: list[Event], keep: type[Event], step: int) -> list[Event]:
    """The events up to and including the first ``keep`` event of ``step`` (what survived a crash)."""
    for i, e in enumerate(events):
        if isinstance(e, keep) and getattr(e, "step", None) == step:
            return events[: i + 1]
    raise AssertionError(f"no {keep.__name__} in step {step}")


@pytest.mark.parametrize(
    ("keep", "step", "asked_again", "next_step_events"),
    [
        (ExecutionFinished, 2, 2, StepStarted),  # a complete step 2: step 3 is asked of the model
        (CodeStarted, 3, 1, CodeStarted),  # step 3's action recorded, its code cut short: run again
        (StepStarted, 3, 2, StepStarted),  # step 3 started, no action yet: asked anew
        (ActionParsed, 4, 0, FinalAnswer),  # the answer was chosen, not given: given without the model
    ],
)
async def test_resume_goes_on_from_the_recorded_events(
    backend: SandboxBackend,
    tmp_path: Path,
    keep: type[Event],
    step: int,
    asked_again: int,
    next_step_events: type[Event],
) -> None:
    settings = make_settings(tmp_path)
    config = SessionConfig(limits=Limits(timeout_s=10.0, kill_grace_s=1.0))
    whole = ScriptedModel(REPLIES)
    async with await backend.create_session(config) as first:
        original = await collect(run_agent("What is 6 * 7?", model=whole, session=first, settings=settings))
    assert isinstance(original[-2], FinalAnswer) and original[-2].answer == "42"

    recorded = cut_after(original, keep, step)
    state = recorded_state(recorded)
    rest = ScriptedModel(REPLIES[len(REPLIES) - asked_again :])
    async with await backend.create_session(config) as fresh:
        assert await replay(fresh, state.cells) is None
        resumed = await collect(
            run_agent(state.question, model=rest, session=fresh, settings=settings, resume=state)
        )
    assert len(rest.requests) == asked_again == rest.remaining + asked_again
    assert isinstance(resumed[0], RunResumed)
    assert resumed[0].replayed_cells == len(state.cells)
    assert isinstance(resumed[1], next_step_events)
    end = resumed[-1]
    assert isinstance(end, RunFinished) and end.status == "answered" and end.answer == "42"
    assert end.steps == 4
    if rest.requests:  # the model sees exactly the conversation it saw in the uninterrupted run
        assert rest.requests[0].messages == whole.requests[len(REPLIES) - asked_again].messages


async def test_replay_reports_a_cell_that_no_longer_works(backend: SandboxBackend, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    config = SessionConfig(limits=Limits(timeout_s=10.0, kill_grace_s=1.0))
    async with await backend.create_session(config) as first:
        original = await collect(
            run_agent("q", model=ScriptedModel(REPLIES), session=first, settings=settings)
        )
    state = recorded_state(original)
    state.cells[0].code = "raise RuntimeError('the data file is gone')"
    async with await backend.create_session(config) as fresh:
        reason = await replay(fresh, state.cells)
    assert reason is not None and "cell 1 of 3" in reason and "the data file is gone" in reason
