"""The critic with the scripted model and a real sandbox: a final answer is checked against the run's
outputs and the question's examples; a failed check gets one retry, never more, then the answer stands."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_support import answer, code, collect, make_settings

from thinkbox.agent.events import AnswerChecked, Event, FinalAnswer, LimitReached, RunFinished
from thinkbox.agent.loop import run_agent
from thinkbox.agent.resume import recorded_state, replay
from thinkbox.config import Settings
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")


def checked(events: list[Event]) -> list[AnswerChecked]:
    return [e for e in events if isinstance(e, AnswerChecked)]


def final(events: list[Event]) -> FinalAnswer:
    found = [e for e in events if isinstance(e, FinalAnswer)]
    assert len(found) == 1, events
    return found[0]


def feedback(events: list[Event]) -> dict[str, int]:
    end = events[-1]
    assert isinstance(end, RunFinished)
    return {k: v for k, v in end.feedback.items() if k.startswith("critic")}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The critic is off by default: these tests turn all of it on."""
    return make_settings(tmp_path, critic="all")


def told(model: ScriptedModel, request: int) -> str:
    """The last user message of the model's request number ``request`` (0-based)."""
    return model.requests[request].messages[-1]["content"]


PRODUCT = "What is 48271 * 9173?"


async def test_an_answer_matching_the_outputs_passes_without_a_retry(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel([code("print(f'{48271 * 9173:,}')"), answer("48271 * 9173 = 442,789,883")])
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    [verdict] = checked(events)
    assert verdict.passed and verdict.checks == ["numbers"] and not verdict.retry
    assert final(events).answer == "48271 * 9173 = 442,789,883"
    assert model.remaining == 0  # asked twice: no retry
    assert feedback(events) == {"critic_passed": 1}


async def test_a_number_not_in_the_outputs_gets_one_retry_and_the_corrected_answer_is_final(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("print(48271 * 9173)"),
            answer("442789893"),  # copied wrongly
            answer("442789883"),
        ]
    )
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    first, second = checked(events)
    assert not first.passed and first.retry and first.answer == "442789893"
    assert "442789893" in first.problems[0] and "no output" in first.problems[0]
    assert told(model, 2) == first.observation  # the retry's request ends with what did not match
    assert "442789893" in first.observation
    assert second.passed and not second.retry
    assert final(events).answer == "442789883"
    assert feedback(events) == {"critic_retry": 1, "critic_passed": 1, "critic_fixed": 1}


async def test_a_critic_that_disagrees_twice_lets_the_second_answer_stand_with_a_note(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [code("print(48271 * 9173)"), answer("about 400000000"), answer("roughly 440000000")]
    )
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    first, second = checked(events)
    assert first.retry
    assert not second.passed and not second.retry  # no second retry
    assert "stands" in second.note and "440000000" in second.note
    assert final(events).answer == "roughly 440000000"
    assert model.remaining == 0
    assert feedback(events) == {"critic_retry": 1, "critic_stood": 1}


async def test_the_retry_shows_no_evidence_of_its_own(session: Session, settings: Settings) -> None:
    """The retry message quotes the wrong number; that quote is not an output the answer may match."""
    model = ScriptedModel([code("print(6 * 7)"), answer("41"), answer("41")])
    events = await collect(run_agent("What is 6 * 7?", model=model, session=session, settings=settings))
    assert [v.passed for v in checked(events)] == [False, False]


async def test_when_the_retry_hits_a_limit_the_first_answer_stands(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, critic="all", max_steps=3)
    model = ScriptedModel([code("print(48271 * 9173)"), answer("442789000"), code("print('still thinking')")])
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    assert not [e for e in events if isinstance(e, LimitReached)]
    first, kept = checked(events)
    assert first.retry and not kept.retry and "limit" in kept.note
    assert final(events).answer == "442789000"
    assert feedback(events) == {"critic_retry": 1, "critic_kept": 1}


async def test_no_retry_when_no_step_is_left(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, critic="all", max_steps=2)
    model = ScriptedModel([code("print(48271 * 9173)"), answer("442789000")])
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    [verdict] = checked(events)
    assert not verdict.retry and "no step left" in verdict.note
    assert final(events).answer == "442789000"


async def test_a_run_without_code_and_an_answer_without_numbers_are_not_checked(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel([answer("442789883")])
    events = await collect(run_agent(PRODUCT, model=model, session=session, settings=settings))
    assert checked(events) == [] and final(events).answer == "442789883"
    model = ScriptedModel([code("print('Paris')"), answer("Paris")])
    events = await collect(run_agent("Capital of France?", model=model, session=session, settings=settings))
    assert checked(events) == []


QUESTION = '''Complete this function.

def second_largest(values: list) -> int:
    """The second largest of values.
    >>> second_largest([1, 5, 3])
    3
    >>> second_largest([10, 20])
    10
    """
'''
WRONG = "def second_largest(values):\n    return sorted(values)[1]"
RIGHT = "def second_largest(values):\n    return sorted(values)[-2]"


async def test_a_function_answer_whose_doctest_fails_gets_a_retry(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel([code(WRONG + "\nprint(second_largest([1, 5, 3]))"), answer(WRONG), answer(RIGHT)])
    events = await collect(run_agent(QUESTION, model=model, session=session, settings=settings))
    first, second = checked(events)
    assert first.checks == ["examples"] and first.retry
    assert first.problems == ["the question's example second_largest([10, 20]) returned 20, expected 10"]
    assert "second_largest([10, 20]) returned 20, expected 10" in told(model, 2)
    assert second.passed and final(events).answer == RIGHT
    # the check ran the answer's code in a namespace of its own: the session keeps its own definition
    result = await session.execute("print(second_largest([10, 20]))", timeout=10)
    assert result.stdout.strip() == "20"


async def test_the_sessions_function_is_checked_when_the_answer_is_a_value(
    session: Session, settings: Settings
) -> None:
    """The small model tests its function and answers with what the test printed: the session's function
    is what the examples judge."""
    model = ScriptedModel([code(WRONG + "\nprint(second_largest([1, 5, 3]))"), answer("3"), answer("3")])
    events = await collect(run_agent(QUESTION, model=model, session=session, settings=settings))
    first = checked(events)[0]
    assert first.retry and "examples" in first.checks and "numbers" in first.checks
    assert any("second_largest([10, 20]) returned 20" in p for p in first.problems)


async def test_the_critic_is_off_by_default_and_when_set_off(session: Session, tmp_path: Path) -> None:
    assert make_settings(tmp_path).agent.critic == "off"
    settings = make_settings(tmp_path, critic=False)
    model = ScriptedModel([code("print(6 * 7)"), answer("41")])
    events = await collect(run_agent("What is 6 * 7?", model=model, session=session, settings=settings))
    assert checked(events) == [] and final(events).answer == "41"


async def test_a_resumed_run_gets_no_second_retry(backend: SandboxBackend, tmp_path: Path) -> None:
    """The process died after the critic's retry was asked for: the resumed run knows it was the one."""
    settings = make_settings(tmp_path, critic="all")
    config = SessionConfig(limits=Limits(timeout_s=10.0, kill_grace_s=1.0))
    replies = [code("print(48271 * 9173)"), answer("442789000"), answer("442789001")]
    async with await backend.create_session(config) as first:
        whole = ScriptedModel(replies)
        original = await collect(run_agent(PRODUCT, model=whole, session=first, settings=settings))
    cut = next(i for i, e in enumerate(original) if isinstance(e, AnswerChecked) and e.retry)
    state = recorded_state(original[: cut + 1])
    assert state.retried is not None and state.pending is None
    rest = ScriptedModel(replies[2:])
    async with await backend.create_session(config) as fresh:
        assert await replay(fresh, state.cells) is None
        again = run_agent(PRODUCT, model=rest, session=fresh, settings=settings, resume=state)
        resumed = await collect(again)
    [verdict] = checked(resumed)
    assert not verdict.retry and "after its one retry" in verdict.note
    assert final(resumed).answer == "442789001"
    retry = original[cut]
    assert isinstance(retry, AnswerChecked)
    assert rest.requests[0].messages[-1]["content"] == retry.observation
