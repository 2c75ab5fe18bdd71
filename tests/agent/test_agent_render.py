"""A snapshot of the terminal rendering of a fixed run (set THINKBOX_UPDATE_SNAPSHOTS=1 to rewrite it)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from rich.console import Console

from thinkbox.agent.events import (
    ActionParsed,
    CodeRejected,
    CodeStarted,
    DisplayProduced,
    Event,
    ExecutionFinished,
    FilesPreviewed,
    FinalAnswer,
    LimitReached,
    Notice,
    OutputChunk,
    ParseFailed,
    RunFinished,
    RunStarted,
    StepStarted,
    ThoughtDelta,
)
from thinkbox.cli.render import FigureSaver, Renderer
from thinkbox.sandbox.types import ExecutionError, ExecutionResult

SNAPSHOT = Path(__file__).parent / "snapshots" / "render.txt"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a picture").decode()
CODE_1 = "amount = principal * (1 + rate / 2) ** 12\nprint(round(amount - principal, 2))"
CODE_2 = "principal, rate = 15000, 0.06\n" + CODE_1


def fixed_run() -> list[Event]:
    name_error = ExecutionError(type="NameError", message="name 'principal' is not defined", traceback="")
    return [
        RunStarted(
            ts=0, run_id="run123", question="interest?", model="scripted", sandbox="zygote", files=["a.csv"]
        ),
        FilesPreviewed(ts=0, files=["a.csv"], text="The files...\n- a.csv (4 B, table)"),
        Notice(ts=0, kind="lint_unavailable", message="pyflakes is not installed"),
        StepStarted(ts=0, step=1),
        ThoughtDelta(ts=0, step=1, text="Compute the "),
        ThoughtDelta(ts=0, step=1, text="interest."),
        ActionParsed(ts=0, step=1, thought="Compute the interest.", action="execute_code", code=CODE_1),
        CodeStarted(ts=0, step=1, code=CODE_1),
        ExecutionFinished(
            ts=0, step=1, result=ExecutionResult(error=name_error, duration_ms=3), observation=""
        ),
        StepStarted(ts=0, step=2),
        ParseFailed(ts=0, step=2, attempt=1, error="the reply contains no JSON object", raw="hmm"),
        ActionParsed(
            ts=0,
            step=2,
            thought="Define the inputs.",
            action="debug_error",
            code=CODE_2,
            repairs=["trailing comma"],
        ),
        CodeStarted(ts=0, step=2, code=CODE_2),
        OutputChunk(ts=0, step=2, name="stdout", text="6386.4"),
        OutputChunk(ts=0, step=2, name="stdout", text="1\n"),
        OutputChunk(ts=0, step=2, name="stderr", text="a warning"),
        DisplayProduced(ts=0, step=2, mime={"image/png": PNG, "text/plain": "<Figure>"}),
        ExecutionFinished(
            ts=0,
            step=2,
            result=ExecutionResult(stdout="6386.41\n", result="6386.41", duration_ms=12),
            observation="",
        ),
        ExecutionFinished(
            ts=0,
            step=2,
            result=ExecutionResult(duration_ms=1),
            observation="",
            assigned="amount = 21386.41\n",
        ),
        ExecutionFinished(
            ts=0, step=2, result=ExecutionResult(timed_out=True, duration_ms=30000), observation=""
        ),
        ExecutionFinished(
            ts=0,
            step=2,
            result=ExecutionResult(timed_out=True, killed=True, state_survived=False, duration_ms=32000),
            observation="",
            session_restarted=True,
        ),
        CodeRejected(
            ts=0, step=2, code="print(total)", problems=["line 1: undefined name 'total'"], observation=""
        ),
        Notice(
            ts=0,
            step=2,
            kind="docs",
            message="Documentation, read in the session:\njson.dumps(obj, *, indent=None)",
        ),
        Notice(ts=0, step=2, kind="repeat", message="Output:\n(the same code and the same output as step 1)"),
        StepStarted(ts=0, step=3),
        ThoughtDelta(ts=0, step=3, text="The output is 6386.41."),
        ActionParsed(
            ts=0, step=3, thought="The output is 6386.41.", action="provide_answer", final_answer="6386.41"
        ),
        FinalAnswer(ts=0, answer="The interest is 6386.41.", steps=3, duration_s=4.25, tokens=2345),
        LimitReached(
            ts=0,
            limit="steps",
            message="stopped without an answer: 3 steps were used",
            steps=3,
            duration_s=1,
            tokens=9,
        ),
        RunFinished(
            ts=0,
            run_id="run123",
            status="answered",
            answer="6386.41",
            steps=3,
            duration_s=4.25,
            tokens=2345,
            feedback={"lint": 1, "previewed": 1},
        ),
    ]


def render(events: list[Event], figures: FigureSaver | None, color: bool = False) -> str:
    console = Console(
        width=80, record=True, color_system="truecolor" if color else None, force_terminal=color
    )
    renderer = Renderer(console, figures)
    for event in events:
        renderer(event)
    return console.export_text(styles=color)


def test_rendering_matches_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = render(fixed_run(), FigureSaver(Path("figures")))
    if os.environ.get("THINKBOX_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8")
    assert (tmp_path / "figures" / "run123" / "step2-figure1.png").read_bytes() == base64.b64decode(PNG)


def test_thinking_code_output_and_answer_look_different() -> None:
    text = render(fixed_run(), None, color=True)
    thought = "\x1b[2;3mCompute the \x1b[0m"  # dim italic
    assert thought in text
    assert "\x1b[1;35mthinking" in text  # bold magenta label
    assert "\x1b[36m╭─" in text  # cyan code panel
    assert "\x1b[32m╭─" in text  # green answer panel
    assert "\x1b[31ma warning" in text  # stderr in red
