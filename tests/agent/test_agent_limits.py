"""Every limit stops the run with a LimitReached event saying which limit and which setting raises it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_support import make_settings
from test_agent_loop import answer, code, collect, of

from thinkbox.agent.events import FinalAnswer, LimitReached, ParseFailed, RunFinished, StepStarted
from thinkbox.agent.loop import run_agent
from thinkbox.errors import AgentError
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.session import Session

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def limited(session: Session, model: ScriptedModel, tmp_path: Path, **agent: Any) -> LimitReached:
    settings = make_settings(tmp_path, **agent)
    events = await collect(run_agent("question", model=model, session=session, settings=settings))
    assert not of(events, FinalAnswer)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "limit"
    limit = events[-2]
    assert isinstance(limit, LimitReached), events[-2]
    assert limit.steps == len(of(events, StepStarted))
    return limit


async def test_the_step_limit_stops_a_model_that_never_answers(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([code(f"print({i})") for i in range(10)])
    limit = await limited(session, model, tmp_path, max_steps=3)
    assert (limit.limit, limit.steps) == ("steps", 3)
    assert "3 steps" in limit.message and "agent.max_steps" in limit.message
    assert len(model.requests) == 3


async def test_the_wall_time_limit_stops_a_slow_model(session: Session, tmp_path: Path) -> None:
    slow = ScriptedModel([code("print(1)")] * 5, chunk_chars=4, delay_s=0.05)  # ~1.5 s per reply
    limit = await limited(session, slow, tmp_path, max_wall_s=1.0)
    assert limit.limit == "wall_time"
    assert 0.9 <= limit.duration_s < 3.0
    assert "agent.max_wall_s" in limit.message


async def test_the_wall_time_limit_cuts_long_running_code(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([code("import time\ntime.sleep(5)"), answer("late")])
    limit = await limited(session, model, tmp_path, max_wall_s=1.0)
    assert limit.limit == "wall_time" and limit.duration_s < 4.0


async def test_consecutive_errors_stop_the_run(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([code(f"{i} / 0") for i in range(5)] + [answer("never")])  # each one new code
    limit = await limited(session, model, tmp_path, max_consecutive_errors=3)
    assert (limit.limit, limit.steps) == ("consecutive_errors", 3)
    assert "agent.max_consecutive_errors" in limit.message


async def test_a_success_resets_the_consecutive_error_count(session: Session, tmp_path: Path) -> None:
    replies = [
        code("1 / 0"),
        code("2 / 0"),
        code("print('ok')"),
        code("3 / 0"),
        code("4 / 0"),
        answer("fine"),
    ]
    settings = make_settings(tmp_path, max_consecutive_errors=3)
    events = await collect(run_agent("q", model=ScriptedModel(replies), session=session, settings=settings))
    assert of(events, FinalAnswer)[0].answer == "fine"


async def test_the_token_limit_stops_the_run(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel([code(f"print({i})") for i in range(10)])
    limit = await limited(session, model, tmp_path, max_tokens=1500)
    assert limit.limit == "tokens"
    assert limit.tokens >= 1500 and "agent.max_tokens" in limit.message
    assert len(model.requests) < 10


async def test_garbage_forever_stops_at_the_limit_and_says_so(session: Session, tmp_path: Path) -> None:
    model = ScriptedModel(["I am not JSON"] * 100)
    settings = make_settings(tmp_path, max_parse_retries=2, max_consecutive_errors=3)
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    limit = of(events, LimitReached)[0]
    assert (limit.limit, limit.steps) == ("consecutive_errors", 3)
    failures = of(events, ParseFailed)
    assert len(failures) == len(model.requests) == 9  # 3 steps x (1 + 2 re-asks)
    assert [f.attempt for f in failures[:3]] == [1, 2, 3]
    assert all("contains no JSON object" in f.error for f in failures)


@pytest.mark.parametrize(
    ("question", "message"),
    [("   ", "the question is empty"), ("x" * 50_001, "more than the limit of 50,000")],
)
async def test_empty_and_huge_questions_are_refused(
    session: Session, tmp_path: Path, question: str, message: str
) -> None:
    with pytest.raises(AgentError) as info:
        await collect(
            run_agent(question, model=ScriptedModel([]), session=session, settings=make_settings(tmp_path))
        )
    assert message in info.value.message
