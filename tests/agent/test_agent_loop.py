"""The CodeAct loop end to end: the scripted model against a real sandbox session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from agent_support import make_settings

from thinkbox.agent.conversation import Conversation
from thinkbox.agent.events import (
    ActionParsed,
    Event,
    ExecutionFinished,
    FinalAnswer,
    LimitReached,
    OutputChunk,
    ParseFailed,
    RunError,
    RunFinished,
    RunStarted,
    ThoughtDelta,
    parse_event,
)
from thinkbox.agent.loop import REPEAT_TEMPERATURE, run_agent
from thinkbox.config import Settings
from thinkbox.errors import ContextOverflow
from thinkbox.models.base import ModelEvent, ModelRequest
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")


def code(text: str, thought: str = "compute", action: str = "execute_code") -> dict[str, str]:
    return {"thought": thought, "action": action, "code": text, "final_answer": ""}


def answer(text: str, thought: str = "done") -> dict[str, str]:
    return {"thought": thought, "action": "provide_answer", "code": "", "final_answer": text}


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


def of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


async def test_a_step_that_prints_nothing_but_assigns_shows_the_model_the_assigned_value(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel([code("result = 504 * 766"), code("pass"), answer("386064")])
    events = await collect(run_agent("What is 504 * 766?", model=model, session=session, settings=settings))

    assigned, silent = of(events, ExecutionFinished)
    assert "result = 386064" in assigned.observation and assigned.assigned == "result = 386064\n"
    assert assigned.result.stdout == ""  # the peek is the loop's, not the user's code
    assert "print() the values you need" in silent.observation and "386064" not in silent.observation
    assert model.requests[1].messages[-1]["content"] == assigned.observation


async def test_a_step_that_only_defines_a_function_is_told_what_it_defined_and_to_test_it(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("import math\n\ndef area(r):\n    return math.pi * r * r"),
            code("print(round(area(2), 3))"),
            answer("12.566"),
        ]
    )
    events = await collect(
        run_agent("Area of a circle of radius 2?", model=model, session=session, settings=settings)
    )

    defined, tested = of(events, ExecutionFinished)
    assert "defined: area" in defined.observation and "Test it" in defined.observation
    assert "provide_answer" not in defined.observation
    assert "12.566" in tested.observation
    assert of(events, FinalAnswer)[0].answer == "12.566"


async def test_compound_interest_recovers_from_a_name_error_and_answers(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, lint=False)  # the sandbox's NameError, not the lint check's
    model = ScriptedModel(
        [
            code("amount = principal * (1 + rate / 2) ** (2 * years)\nprint(round(amount - principal, 2))"),
            code(
                "principal, rate, years = 15000, 0.06, 6\n"
                "amount = principal * (1 + rate / 2) ** (2 * years)\n"
                "print(round(amount - principal, 2))",
                thought="principal was not defined; define the inputs first",
                action="debug_error",
            ),
            answer("6386.41", thought="The output is 6386.41."),
        ]
    )
    question = "Calculate compound interest at 15k premium, 6% interest compounded semi annually for 6 years"
    events = await collect(run_agent(question, model=model, session=session, settings=settings))

    first, second = of(events, ExecutionFinished)
    assert first.result.error.type == "NameError"
    assert "NameError: name 'principal' is not defined" in first.observation
    assert second.result.stdout == "6386.41\n"
    assert [c.text for c in of(events, OutputChunk)] == ["6386.41\n"]
    final = of(events, FinalAnswer)[0]
    assert (final.answer, final.steps) == ("6386.41", 3)
    assert events[-1] == RunFinished(
        ts=events[-1].ts, run_id=events[0].run_id, status="answered", answer="6386.41", steps=3,
        duration_s=events[-1].duration_s, tokens=final.tokens,
    )  # fmt: skip
    assert "".join(d.text for d in of(events, ThoughtDelta) if d.step == 2) == second_thought(model)
    # History as in CodeAct: system, question, then the action JSON and the result as a user message.
    roles = [m["role"] for m in model.requests[2].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert model.requests[2].messages[1]["content"] == question
    first_line = model.requests[2].messages[2]["content"].split("\n", 1)[0]  # the JSON, in either form
    assert json.loads(first_line)["action"] == "execute_code"
    assert "NameError" in model.requests[2].messages[3]["content"]
    assert "6386.41" in model.requests[2].messages[5]["content"]
    assert model.requests[0].json_schema is not None
    for event in events:  # every event survives a JSON round trip
        assert parse_event(event.model_dump_json()) == event


def second_thought(model: ScriptedModel) -> str:
    return str(json.loads(model.replies[1])["thought"])


async def test_a_question_about_an_xlsx_file(session: Session, settings: Settings, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["item", "price"])
    for item, price in [("pen", 1.25), ("book", 12.5), ("lamp", 30.0), ("cup", 4.75)]:
        sheet.append([item, price])
    book.save(tmp_path / "transactions.xlsx")
    await session.put_file("transactions.xlsx", (tmp_path / "transactions.xlsx").read_bytes())
    model = ScriptedModel(
        [
            code("import pandas as pd\ndf = pd.read_excel('transactions.xlsx')\nprint(df['price'].sum())"),
            answer("48.5"),
        ]
    )
    events = await collect(
        run_agent("What is the total of the price column?", model=model, session=session, settings=settings)
    )
    assert of(events, RunStarted)[0].files == ["transactions.xlsx"]
    assert "transactions.xlsx" in model.requests[0].messages[0]["content"]
    assert of(events, ExecutionFinished)[0].result.stdout.strip() == "48.5"
    assert of(events, FinalAnswer)[0].answer == "48.5"


async def test_a_line_starting_with_bang_runs_a_shell_command_and_the_model_sees_its_output(
    session: Session, settings: Settings
) -> None:
    await session.put_file("notes.txt", b"one\ntwo\nthree\n")
    model = ScriptedModel([code("!wc -l < notes.txt\n!cat missing.txt\nprint('after')"), answer("3")])
    question = "How many lines does notes.txt have?"
    events = await collect(run_agent(question, model=model, session=session, settings=settings))

    result = of(events, ExecutionFinished)[0].result
    assert result.ok and result.stdout == "3\nafter\n"  # Python goes on after a failed command
    assert "missing.txt" in result.stderr and "[exit status 1]" in result.stderr
    told = model.requests[1].messages[-1]["content"]
    assert "3\nafter" in told and "[exit status 1]" in told
    assert of(events, FinalAnswer)[0].answer == "3"


async def test_a_question_about_a_csv_file(session: Session, settings: Settings) -> None:
    await session.put_file("sales.csv", b"region,units\nnorth,120\nsouth,80\nnorth,30\n")
    model = ScriptedModel(
        [
            code("import pandas as pd\nsales = pd.read_csv('sales.csv')"),
            code("print(sales.groupby('region')['units'].sum()['north'])"),
            answer("150 units"),
        ]
    )
    events = await collect(
        run_agent("Units sold in the north?", model=model, session=session, settings=settings)
    )
    assert of(events, ExecutionFinished)[1].result.stdout.strip() == "150"
    assert of(events, FinalAnswer)[0].answer == "150 units"


async def test_a_chat_reuses_a_variable_from_an_earlier_question(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("product = 48271 * 9173\nprint(product)"),
            answer("442789883"),
            code("print(product + 1)", thought="product is still defined"),
            answer("442789884"),
        ]
    )
    chat = Conversation(model=model, session=session, settings=settings)
    first = await collect(chat.ask("What is 48271 * 9173?"))
    second = await collect(chat.ask("And one more than that?"))
    assert of(first, FinalAnswer)[0].answer == "442789883"
    assert of(second, ExecutionFinished)[0].result.stdout == "442789884\n"
    assert chat.answers == ["442789883", "442789884"]
    later = [m["content"] for m in model.requests[2].messages]
    assert later[1] == "What is 48271 * 9173?" and later[-1] == "And one more than that?"
    assert [m["role"] for m in model.requests[2].messages].count("system") == 1


async def test_an_unparseable_reply_is_re_asked_with_the_reason(session: Session, settings: Settings) -> None:
    model = ScriptedModel(["I think the answer is 3", answer("3")])
    events = await collect(run_agent("r in strawberry?", model=model, session=session, settings=settings))
    failed = of(events, ParseFailed)[0]
    assert (failed.step, failed.attempt, failed.raw) == (1, 1, "I think the answer is 3")
    reask = model.requests[1].messages[-1]["content"]
    assert "contains no JSON object" in reask and '"action": "provide_answer"' in reask
    assert of(events, FinalAnswer)[0].answer == "3"
    # The garbage is not kept in the history once a valid action came.
    assert "I think" not in json.dumps(chat_history_after(model))


async def test_failed_code_sent_again_unchanged_is_not_run_and_the_model_is_re_asked_to_sample_another(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, lint=False)  # code that fails when it runs
    broken = code("print(1 / zero)")
    model = ScriptedModel([broken, code("print(2 / zero)"), broken, code("print(2)"), answer("2")])
    events = await collect(run_agent("What is 2?", model=model, session=session, settings=settings))

    ran = [e.result.error.type if e.result.error else "ok" for e in of(events, ExecutionFinished)]
    assert ran == ["NameError", "NameError", "ok"]  # the resent code was not run a second time
    failed = of(events, ParseFailed)
    assert [(f.step, f.attempt) for f in failed] == [(3, 1)]
    assert "code of step 1, unchanged" in failed[0].error
    greedy, resample = model.requests[2], model.requests[3]
    assert greedy.temperature == settings.model.temperature == 0.0 and greedy.seed is None
    assert resample.temperature == REPEAT_TEMPERATURE and resample.seed == 1
    assert "code of step 1, unchanged" in resample.messages[-1]["content"]
    assert of(events, FinalAnswer)[0].answer == "2"


async def test_failed_code_may_be_sent_again_after_a_step_that_changed_the_session(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, lint=False)  # code that fails when it runs
    model = ScriptedModel([code("print(x)"), code("x = 5"), code("print(x)"), answer("5")])
    events = await collect(run_agent("What is x?", model=model, session=session, settings=settings))
    ran = [e.result.error.type if e.result.error else e.result.stdout for e in of(events, ExecutionFinished)]
    assert ran == ["NameError", "", "5\n"] and not of(events, ParseFailed)


async def test_code_that_ran_is_not_refused_when_sent_again(session: Session, settings: Settings) -> None:
    model = ScriptedModel([code("n = 1"), code("n += 1\nprint(n)"), code("n += 1\nprint(n)"), answer("3")])
    events = await collect(run_agent("Count to 3", model=model, session=session, settings=settings))
    assert [e.result.stdout for e in of(events, ExecutionFinished)] == ["", "2\n", "3\n"]
    assert not of(events, ParseFailed)


def chat_history_after(model: ScriptedModel) -> list[Any]:
    return list(model.requests[-1].messages[:2])


async def test_long_output_is_cut_to_head_and_tail_for_the_model(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, observation_chars=500)
    model = ScriptedModel([code("print('A' * 3000 + 'END')"), answer("done")])
    events = await collect(run_agent("print a lot", model=model, session=session, settings=settings))
    observation = of(events, ExecutionFinished)[0].observation
    assert "characters cut here" in observation
    assert observation.count("A") < 600 and "END" in observation
    assert of(events, ExecutionFinished)[0].result.stdout.startswith("A" * 3000)


async def test_a_model_failure_ends_the_run_with_a_run_error(session: Session, settings: Settings) -> None:
    model = ScriptedModel([code("x = 1")])
    events = await collect(run_agent("anything", model=model, session=session, settings=settings))
    error = of(events, RunError)[0]
    assert error.code == "model_error" and "ran out of replies" in error.message
    assert isinstance(events[-1], RunFinished) and events[-1].status == "error"


class SmallContextModel(ScriptedModel):
    """The scripted model with a context window: a longer prompt raises ContextOverflow, as the local
    model and an OpenAI-compatible server (translated by its client) do."""

    def __init__(self, replies: list[Any], context_chars: int) -> None:
        super().__init__(replies)
        self.context_chars = context_chars

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        size = sum(len(m["content"]) for m in request.messages)
        if size > self.context_chars:
            raise ContextOverflow(f"the prompt has {size} characters, more than {self.context_chars}")
        async for event in super().stream(request):
            yield event


async def test_a_conversation_that_outgrows_the_context_stops_at_a_limit_not_an_error(
    session: Session, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"agent": settings.agent.model_copy(update={"observation_chars": 20_000})}
    )
    model = SmallContextModel([code("print('x' * 10_000)"), answer("never asked")], context_chars=8000)
    events = await collect(run_agent("print a lot", model=model, session=session, settings=settings))

    limit = of(events, LimitReached)[0]
    assert limit.limit == "context" and "more than 8000" in limit.message
    assert not of(events, RunError) and of(events, ExecutionFinished)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "limit"


async def test_hanging_code_is_interrupted_and_the_model_is_told(
    backend: SandboxBackend, settings: Settings
) -> None:
    session = await backend.create_session(SessionConfig(limits=Limits(timeout_s=1.0, kill_grace_s=1.0)))
    try:
        model = ScriptedModel(
            [
                code("kept = 7\nwhile True:\n    pass"),
                code("print(kept * 6)", thought="kept survived"),
                answer("42"),
            ]
        )
        events = await collect(run_agent("hang", model=model, session=session, settings=settings))
    finally:
        await session.close()
    hung, after = of(events, ExecutionFinished)
    assert hung.result.timed_out and not hung.result.killed
    assert "interrupted" in hung.observation and "Variables from earlier steps are kept" in hung.observation
    assert after.result.stdout == "42\n"
    assert of(events, FinalAnswer)[0].answer == "42"


async def test_code_that_ignores_the_interrupt_is_killed_and_the_session_restarted(
    backend: SandboxBackend, settings: Settings
) -> None:
    session = await backend.create_session(SessionConfig(limits=Limits(timeout_s=1.0, kill_grace_s=0.5)))
    stubborn = (
        "import time\nlost = 1\nwhile True:\n    try:\n        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n        pass"
    )

    try:
        model = ScriptedModel([code(stubborn), code("print('lost' in globals())"), answer("restarted")])
        events = await collect(run_agent("stubborn", model=model, session=session, settings=settings))
    finally:
        await session.close()
    killed, after = of(events, ExecutionFinished)
    assert killed.result.killed and killed.session_restarted
    assert "All variables and imports are lost" in killed.observation
    assert "A fresh interpreter was started" in killed.observation
    assert after.result.stdout == "False\n"


async def test_an_action_parsed_event_names_the_repairs(session: Session, settings: Settings) -> None:
    model = ScriptedModel(["```json\n" + json.dumps(answer("9")) + "\n```"])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    assert of(events, ActionParsed)[0].repairs == ["code fence around the JSON"]


async def test_history_keeps_a_clean_reply_verbatim_and_drops_a_guess(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, reply_format="json")  # a reply in the form asked for stays verbatim
    compact = '{"thought":"t","action":"execute_code","code":"print(2)","final_answer":""}'
    guessing = json.dumps({**code("print(3)"), "final_answer": "probably 3"})
    model = ScriptedModel([compact, guessing, answer("3")])
    await collect(run_agent("q", model=model, session=session, settings=settings))
    history = model.requests[2].messages
    assert history[2]["content"] == compact  # as generated: a local model's KV cache matches it
    assert json.loads(history[4]["content"])["final_answer"] == ""  # the early guess is not shown back
