"""The loop's feedback with the scripted model and a real sandbox: lint before running, file previews,
repeated steps, live documentation. Each fires when it should and stays quiet when it should not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from agent_support import answer, code, collect, make_settings

from thinkbox.agent import lint
from thinkbox.agent.conversation import Conversation
from thinkbox.agent.events import (
    CodeRejected,
    Event,
    ExecutionFinished,
    FilesPreviewed,
    FinalAnswer,
    LimitReached,
    Notice,
    OutputChunk,
    ParseFailed,
    RunFinished,
    RunResumed,
)
from thinkbox.agent.loop import run_agent
from thinkbox.agent.resume import recorded_state, replay
from thinkbox.config import Settings
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")
needs_pyflakes = pytest.mark.skipif(not lint.AVAILABLE, reason="pyflakes is not installed")


def of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def notices(events: list[Event]) -> list[Notice]:
    """The run's notices but the one saying that pyflakes is missing (where it is)."""
    return [e for e in of(events, Notice) if e.kind != "lint_unavailable"]


def finished(events: list[Event]) -> RunFinished:
    end = events[-1]
    assert isinstance(end, RunFinished)
    return end


# -- lint -----------------------------------------------------------------------------------------
@needs_pyflakes
async def test_an_undefined_name_goes_back_to_the_model_without_running_the_code(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("print('side effect')\nprint(round(0.15 * price, 2))"),
            code("price = 2345.50\nprint(round(0.15 * price, 2))", action="debug_error"),
            answer("351.82"),
        ]
    )
    events = await collect(run_agent("15% of 2345.50?", model=model, session=session, settings=settings))

    rejected = of(events, CodeRejected)
    assert [(r.step, r.problems) for r in rejected] == [(1, ["line 2: undefined name 'price'"])]
    assert [c.text for c in of(events, OutputChunk)] == ["351.82\n"]  # step 1's first line never ran
    assert [e.step for e in of(events, ExecutionFinished)] == [2]
    told = model.requests[1].messages[-1]["content"]
    assert told == rejected[0].observation and "was not run" in told and "'price'" in told
    assert finished(events).feedback == {"lint": 1}


@needs_pyflakes
async def test_names_from_earlier_steps_shell_lines_and_kernel_names_are_not_flagged(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("import math\nrate = 0.05\n_hidden = 2"),
            code("years = 3"),
            code("!echo shell\nprint(round(math.exp(rate * years) * _hidden, 4))\ndisplay(years)"),
            answer("2.3237"),
        ]
    )
    events = await collect(run_agent("growth?", model=model, session=session, settings=settings))
    assert not of(events, CodeRejected)
    assert "2.3237" in of(events, ExecutionFinished)[2].result.stdout
    assert "lint" not in finished(events).feedback


@needs_pyflakes
async def test_a_function_squeezed_onto_one_line_is_a_syntax_error_before_running(
    session: Session, tmp_path: Path
) -> None:
    one_line = "def gcd(a, b): while b != 0: a, b = b, a % b return a"
    model = ScriptedModel([code(one_line), code(one_line), answer("6")])
    settings = make_settings(tmp_path, max_parse_retries=0)
    events = await collect(run_agent("gcd(12, 18)?", model=model, session=session, settings=settings))
    rejected = of(events, CodeRejected)[0]
    assert "SyntaxError" in rejected.problems[0] and one_line in rejected.problems[0]
    assert not of(events, ExecutionFinished)
    failed = of(events, ParseFailed)  # sent again unchanged: refused like code that failed when run
    assert failed and "unchanged" in failed[0].error


async def test_with_lint_off_the_code_runs_and_the_sandbox_reports_the_name_error(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, lint=False)
    model = ScriptedModel([code("print(nowhere)"), answer("?")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    assert not of(events, CodeRejected)
    assert of(events, ExecutionFinished)[0].result.error.type == "NameError"


async def test_lint_problems_cover_only_syntax_and_undefined_names() -> None:
    if not lint.AVAILABLE:
        assert lint.problems("print(x)") == []  # without pyflakes nothing is checked
        return
    assert lint.problems("import os\nx = 1") == []  # unused names are no reason to refuse code
    assert lint.problems("print(x)", known={"x"}) == []
    assert lint.problems("print(x)\nprint(x, y)") == [
        "line 1: undefined name 'x'",
        "line 2: undefined name 'y'",
    ]
    assert lint.problems("!ls -l\nprint(1)") == []
    assert lint.problems("for i in range(3):\n    !echo $i") == []
    assert lint.problems("if a != 1:\n    pass") == ["line 1: undefined name 'a'"]
    assert lint.problems("print(1") and "SyntaxError" in lint.problems("print(1")[0]


# -- repeats --------------------------------------------------------------------------------------
async def test_a_step_repeating_code_and_output_is_not_fed_again_and_a_third_send_is_refused(
    session: Session, settings: Settings
) -> None:
    same = code("total = 17 + 25\nprint(total)")
    same_reformatted = code("total = 17+25  # again\nprint( total )")
    model = ScriptedModel([same, same_reformatted, same, answer("42")])
    events = await collect(run_agent("17 + 25?", model=model, session=session, settings=settings))

    runs = of(events, ExecutionFinished)
    assert [e.step for e in runs] == [1, 2]  # the third send did not run
    assert "42" in runs[0].observation and "42" not in runs[1].observation
    assert "same output as step 1" in runs[1].observation
    notice = notices(events)[0]
    assert (notice.step, notice.kind) == (2, "repeat") and notice.message == runs[1].observation
    refused = of(events, ParseFailed)[0]
    assert refused.step == 3 and "already ran in step 2" in refused.error
    assert of(events, FinalAnswer)[0].answer == "42"
    assert finished(events).feedback == {"repeat": 1, "repeat_refused": 1}


async def test_identical_code_with_a_different_output_is_not_a_repeat(
    session: Session, settings: Settings
) -> None:
    draw = code("import random\nprint(random.random())")
    model = ScriptedModel([draw, draw, draw, answer("random")])
    events = await collect(run_agent("a random number?", model=model, session=session, settings=settings))
    outputs = [e.result.stdout for e in of(events, ExecutionFinished)]
    assert len(outputs) == 3 and len(set(outputs)) == 3
    assert not notices(events) and not of(events, ParseFailed)


async def test_with_repeats_off_the_same_output_is_fed_again(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, repeats=False)
    same = code("print(6 * 7)")
    model = ScriptedModel([same, same, same, answer("42")])
    events = await collect(run_agent("6 * 7?", model=model, session=session, settings=settings))
    assert all("42" in e.observation for e in of(events, ExecutionFinished))
    assert len(of(events, ExecutionFinished)) == 3 and not notices(events)


# -- live documentation ---------------------------------------------------------------------------
async def test_a_type_error_of_a_library_call_shows_its_signature(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel(
        [
            code("import json\ndata = {'a': 1}\nprint(json.dumps(data, indentt=2))"),
            code("print(json.dumps(data, indent=2))", action="debug_error"),
            answer("ok"),
        ]
    )
    events = await collect(run_agent("pretty JSON?", model=model, session=session, settings=settings))
    failed = of(events, ExecutionFinished)[0]
    assert failed.result.error.type == "TypeError"
    assert "json.dumps(obj, *, skipkeys=False" in failed.observation
    assert "Serialize" in failed.observation  # the docstring's first line
    assert "print(" not in failed.observation.partition("Documentation")[2]  # the builtin is left out
    assert notices(events)[0].kind == "docs"
    assert finished(events).feedback == {"docs": 1}


async def test_an_attribute_error_shows_the_closest_names(session: Session, settings: Settings) -> None:
    model = ScriptedModel([code("import math\nprint(math.sqroot(16))"), answer("4")])
    events = await collect(run_agent("sqrt 16?", model=model, session=session, settings=settings))
    observation = of(events, ExecutionFinished)[0].observation
    assert "math (module math) has no attribute 'sqroot'; close names: sqrt" in observation
    assert "math.sqrt(x, /)" in observation


async def test_a_key_error_shows_the_keys_the_record_has(session: Session, settings: Settings) -> None:
    model = ScriptedModel(
        [
            code("orders = [{'sku': 'a', 'qty': 2}]\nfor line in orders:\n    print(line['quantity'])"),
            answer("2"),
        ]
    )
    events = await collect(run_agent("units?", model=model, session=session, settings=settings))
    observation = of(events, ExecutionFinished)[0].observation
    assert "KeyError: 'quantity'" in observation
    assert "line (dict) has the keys: 'sku', 'qty'" in observation


async def test_a_type_error_of_the_steps_own_code_gets_no_documentation(
    session: Session, settings: Settings
) -> None:
    model = ScriptedModel([code("n = 3\nprint(n + 'a')"), answer("?")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    assert of(events, ExecutionFinished)[0].result.error.type == "TypeError"
    assert not notices(events) and "Documentation" not in of(events, ExecutionFinished)[0].observation


async def test_a_lookup_that_cannot_be_made_adds_nothing_and_changes_nothing(
    session: Session, settings: Settings
) -> None:
    # the failing call is on an object made by a call: not a plain chain, so nothing is evaluated
    model = ScriptedModel([code("print(dict(a=1).gett('a'))"), code("print(sorted(globals()))"), answer("?")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    first, listing = of(events, ExecutionFinished)
    assert first.result.error.type == "AttributeError" and not notices(events)
    names = set(json.loads(listing.result.stdout.replace("'", '"')))
    assert names == {"__builtins__", "__name__", "_thinkbox_shell", "display"}  # helpers leave nothing


# -- file previews --------------------------------------------------------------------------------
async def _files(session: Session, tmp_path: Path) -> None:
    await session.put_file("sales.csv", b"region,units,price\nnorth,120,9.5\nsouth,80,11.0\nnorth,30,9.5\n")
    records = [{"id": i, "customer": {"name": f"c{i}", "city": "Oslo"}, "items": [1, 2]} for i in range(3)]
    await session.put_file("orders.json", json.dumps(records).encode())
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Q1"
    sheet.append(["item", "price"])
    sheet.append(["pen", 1.25])
    book.create_sheet("Q2").append(["month", "cost"])
    book.save(tmp_path / "book.xlsx")
    await session.put_file("book.xlsx", (tmp_path / "book.xlsx").read_bytes())
    await session.put_file("notes.txt", b"first line\nsecond line\n")
    await session.put_file(".hidden.csv", b"a,b\n1,2\n")


async def test_the_model_sees_the_files_structure_before_its_first_step(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    await _files(session, tmp_path)
    model = ScriptedModel([answer("150")])
    events = await collect(run_agent("Units in the north?", model=model, session=session, settings=settings))

    previewed = of(events, FilesPreviewed)[0]
    assert events.index(previewed) == 1 and sorted(previewed.files) == [
        "book.xlsx", "notes.txt", "orders.json", "sales.csv"
    ]  # fmt: skip
    text = previewed.text
    assert "columns: region (" in text and "units (int64), price (float64)" in text  # pandas 2 or 3
    assert "north,120,9.5" in text and "3 rows" in text
    assert "list of 3, the first: {id: int (0), customer: {name: str" in text
    assert 'sheet "Q1" (2 rows x 2 columns); first row: item, price' in text and 'sheet "Q2"' in text
    assert "first line" in text and ".hidden" not in text
    question = model.requests[0].messages[1]["content"]
    assert question.startswith("Units in the north?") and question.endswith(text)
    assert finished(events).feedback == {"previewed": 4}


async def test_hostile_files_give_short_descriptions_and_the_run_goes_on(
    session: Session, settings: Settings
) -> None:
    await session.put_file("huge_line.csv", b"a," * 3_000_000 + b"\n1,2\n")
    await session.put_file("broken.json", b'{"a": [1, 2')
    await session.put_file("fake.xlsx", b"not a zip at all")
    await session.put_file("blob.bin", bytes(range(256)) * 100)
    model = ScriptedModel([code("print(1)"), answer("1")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    text = of(events, FilesPreviewed)[0].text
    assert "broken.json" in text and "could not be read" in text
    assert "fake.xlsx" in text and "blob.bin (25.0 KB, binary)" in text
    assert len(text) <= settings.agent.preview_tokens * 3 + 200
    assert of(events, FinalAnswer)[0].answer == "1"


async def test_previews_fit_the_budget_and_are_not_repeated_in_a_chat(
    session: Session, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, preview_tokens=100)
    for n in range(8):
        await session.put_file(f"t{n}.csv", b"x,y\n" + b"1,2\n" * 50)
    model = ScriptedModel([answer("a"), answer("b")])
    chat = Conversation(model=model, session=session, settings=settings)
    first = await collect(chat.ask("first?"))
    second = await collect(chat.ask("second?"))
    third = await collect(chat.ask("third?"))
    described = of(first, FilesPreviewed)[0]
    assert len(described.text) < 700 and "more files not described (agent.preview_tokens)" in described.text
    assert 0 < len(described.files) < 8
    later = [f for run in (second, third) for e in of(run, FilesPreviewed) for f in e.files]
    assert not set(later) & set(described.files)  # a file described once is not described again


async def test_with_previews_off_nothing_is_read(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, previews=False)
    await session.put_file("sales.csv", b"a,b\n1,2\n")
    model = ScriptedModel([answer("x")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    assert not of(events, FilesPreviewed) and model.requests[0].messages[1]["content"] == "q"


# -- resume ---------------------------------------------------------------------------------------
@needs_pyflakes
async def test_a_run_with_previews_and_a_rejected_step_resumes_with_the_same_conversation(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    config = SessionConfig(limits=Limits(timeout_s=10.0, kill_grace_s=1.0))
    replies = [code("print(units * 2)"), code("units = 21\nprint(units * 2)"), answer("42")]
    whole = ScriptedModel(replies)
    async with await backend.create_session(config) as first:
        await first.put_file("data.csv", b"units\n21\n")
        original = await collect(run_agent("twice?", model=whole, session=first, settings=settings))
    cut = next(i for i, e in enumerate(original) if isinstance(e, CodeRejected))
    state = recorded_state(original[: cut + 1])
    assert state.errors == 1 and state.failed_code == {"print(units * 2)": 1}
    rest = ScriptedModel(replies[1:])
    async with await backend.create_session(config) as fresh:
        await fresh.put_file("data.csv", b"units\n21\n")
        assert await replay(fresh, state.cells) is None
        resumed = await collect(
            run_agent(state.question, model=rest, session=fresh, settings=settings, resume=state)
        )
    assert isinstance(resumed[0], RunResumed) and not of(resumed, FilesPreviewed)
    assert rest.requests[0].messages == whole.requests[1].messages
    assert finished(resumed).answer == "42"


async def test_limits_still_stop_a_run_that_only_repeats(session: Session, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_steps=4)
    model = ScriptedModel([code("print(5)")] * 12)
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    assert isinstance(events[-2], LimitReached)


async def test_without_pyflakes_the_code_runs_and_the_run_says_so_once(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lint, "AVAILABLE", False)
    monkeypatch.setattr(lint, "_checker", None)  # as when the import failed
    model = ScriptedModel([code("print(nowhere)"), code("print(2)"), answer("2")])
    events = await collect(run_agent("q", model=model, session=session, settings=settings))
    said = [e for e in of(events, Notice) if e.kind == "lint_unavailable"]
    assert len(said) == 1 and "pyflakes" in said[0].message and events.index(said[0]) == 1
    assert not of(events, CodeRejected)
    assert of(events, ExecutionFinished)[0].result.error.type == "NameError"
