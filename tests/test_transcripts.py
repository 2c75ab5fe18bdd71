"""Transcripts: written line by line as events arrive, listed, found by prefix, exported as notebooks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from thinkbox.agent import events as ev
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.notebook import export_notebook, transcript_to_notebook
from thinkbox.sandbox.types import ExecutionError, ExecutionResult
from thinkbox.transcripts import (
    RunNotFound,
    TranscriptWriter,
    find_run,
    list_runs,
    read_events,
    runs_dir,
    summarize,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def answered_run(run_id: str = "run1abc", question: str = "What is 6*7?", ts: float = 1000.0) -> list[Any]:
    """The events of a run that fails once (NameError), fixes it, draws a figure and answers."""
    error = ExecutionError(
        type="NameError", message="name 'x' is not defined", traceback="Traceback\nNameError: x"
    )
    return [
        ev.RunStarted(
            ts=ts, run_id=run_id, question=question, model="scripted", sandbox="zygote", files=["a.csv"]
        ),
        ev.StepStarted(ts=ts, step=1),
        ev.ThoughtDelta(ts=ts, step=1, text="multiply"),
        ev.ActionParsed(ts=ts, step=1, thought="Multiply.", action="execute_code", code="print(x * 7)"),
        ev.CodeStarted(ts=ts, step=1, code="print(x * 7)"),
        ev.ExecutionFinished(ts=ts, step=1, result=ExecutionResult(error=error), observation="NameError"),
        ev.StepStarted(ts=ts, step=2),
        ev.ActionParsed(
            ts=ts, step=2, thought="Define x.", action="debug_error", code="x = 6\nprint(x)\nx * 7"
        ),
        ev.CodeStarted(ts=ts, step=2, code="x = 6\nprint(x)\nx * 7"),
        ev.OutputChunk(ts=ts, step=2, name="stdout", text="6"),
        ev.OutputChunk(ts=ts, step=2, name="stdout", text="\n"),
        ev.OutputChunk(ts=ts, step=2, name="stderr", text="warning\n"),
        ev.DisplayProduced(ts=ts, step=2, mime={"image/png": PNG, "text/plain": "<Figure>"}),
        ev.ExecutionFinished(
            ts=ts,
            step=2,
            result=ExecutionResult(stdout="6\n", stderr="warning\n", result="42"),
            observation="42",
        ),
        ev.StepStarted(ts=ts, step=3),
        ev.ActionParsed(ts=ts, step=3, thought="Done.", action="provide_answer", final_answer="42"),
        ev.FinalAnswer(ts=ts, answer="42", steps=3, duration_s=1.5, tokens=321),
        ev.RunFinished(
            ts=ts, run_id=run_id, status="answered", answer="42", steps=3, duration_s=1.5, tokens=321
        ),
    ]


def write_run(directory: Path, events: list[Any]) -> Path:
    with TranscriptWriter(directory) as writer:
        for event in events:
            writer.write(event)
    assert writer.path is not None
    return writer.path


def test_each_event_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    writer = TranscriptWriter(tmp_path)
    run = answered_run()

    writer.write(run[0])
    assert writer.path == tmp_path / "runs" / "run1abc.jsonl"
    assert [e["type"] for e in read_events(writer.path)] == ["run_started"]  # not closed, already there
    writer.write(run[1])
    assert len(writer.path.read_text().splitlines()) == 2
    writer.close()


def test_lines_parse_back_into_the_agent_events(tmp_path: Path) -> None:
    path = write_run(tmp_path, answered_run())

    parsed = [ev.parse_event(line) for line in path.read_text().splitlines()]

    assert parsed == answered_run()


def test_plain_dict_events_are_accepted_and_a_missing_type_is_refused(tmp_path: Path) -> None:
    writer = TranscriptWriter(tmp_path, run_id="given")
    writer.write({"type": "run_started", "run_id": "other", "question": "q"})
    with pytest.raises(TypeError, match="type"):
        writer.write({"question": "no type"})
    writer.close()

    assert writer.path == tmp_path / "runs" / "given.jsonl"
    assert read_events(writer.path)[0]["question"] == "q"


def test_run_id_cannot_escape_the_runs_folder(tmp_path: Path) -> None:
    with TranscriptWriter(tmp_path / "data") as writer:
        writer.write({"type": "run_started", "run_id": "../../evil"})

    assert writer.path is not None
    assert writer.path.parent == tmp_path / "data" / "runs"
    assert not (tmp_path / "evil.jsonl").exists()


def test_each_run_of_a_chat_gets_its_own_file(tmp_path: Path) -> None:
    with TranscriptWriter(tmp_path) as writer:
        for event in [*answered_run("first", "q1"), *answered_run("second", "q2")]:
            writer.write(event)

    assert sorted(s.question for s in list_runs(tmp_path)) == ["q1", "q2"]
    assert len(read_events(find_run(tmp_path, "second"))) == len(answered_run())


def test_a_writer_given_a_run_id_keeps_every_event_in_one_file(tmp_path: Path) -> None:
    with TranscriptWriter(tmp_path, run_id="chat1") as writer:
        for event in [*answered_run("first", "q1"), *answered_run("second", "q2")]:
            writer.write(event)

    assert [s.run_id for s in list_runs(tmp_path)] == ["chat1"]


async def test_tee_writes_events_while_passing_them_on(tmp_path: Path) -> None:
    async def events() -> AsyncIterator[Any]:
        for event in answered_run():
            yield event

    with TranscriptWriter(tmp_path) as writer:
        seen = [e async for e in writer.tee(events())]

    assert seen == answered_run()
    assert writer.path is not None
    assert len(read_events(writer.path)) == len(seen)


def test_summary_of_an_answered_run(tmp_path: Path) -> None:
    summary = summarize(write_run(tmp_path, answered_run()))

    assert (summary.run_id, summary.question, summary.answer) == ("run1abc", "What is 6*7?", "42")
    assert (summary.steps, summary.status, summary.tokens, summary.model) == (3, "answered", 321, "scripted")
    assert summary.started == 1000.0


def test_summary_of_a_run_cut_by_ctrl_c_with_a_torn_last_line(tmp_path: Path) -> None:
    path = write_run(tmp_path, answered_run()[:8])
    with path.open("a") as f:
        f.write('{"type": "output_chunk", "st')

    summary = summarize(path)

    assert summary.status == "incomplete"
    assert summary.answer is None
    assert summary.steps == 2


def test_a_damaged_line_is_skipped_not_the_run_nor_every_other_run(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a disk or a copy gone wrong) stopped ``runs list`` for every run."""
    events = answered_run("dam4ged")
    path = write_run(tmp_path, events)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5:5] = [b'{"type": "output_chunk", "text": "\xff\xfe"}\n', b"\x80\x81 garbage\n"]
    path.write_bytes(b"".join(lines))
    write_run(tmp_path, answered_run("intact", "other", ts=2000.0))
    (runs_dir(tmp_path) / "dam4ged-folder.jsonl").mkdir()

    assert [(s.run_id, s.status) for s in list_runs(tmp_path)] == [
        ("intact", "answered"),
        ("dam4ged", "answered"),
    ]
    assert len(read_events(path)) == len(events) + 1  # the chunk kept, its bad bytes replaced
    assert find_run(tmp_path, "dam4") == path  # the folder named like a transcript is not one


def test_summary_of_runs_stopped_by_a_limit_or_an_error(tmp_path: Path) -> None:
    start = answered_run()[:2]
    limited = write_run(
        tmp_path / "a",
        [*start, ev.LimitReached(limit="steps", message="10 steps", steps=10, duration_s=3.0, tokens=5)],
    )
    failed = write_run(tmp_path / "b", [*start, ev.RunError(code="model_unavailable", message="down")])

    assert summarize(limited).status == "limit"
    assert summarize(limited).steps == 10
    assert summarize(failed).status == "error"


def test_list_is_newest_first_and_find_accepts_a_unique_prefix(tmp_path: Path) -> None:
    write_run(tmp_path, answered_run("aaa111", "old", ts=1000.0))
    write_run(tmp_path, answered_run("aab222", "new", ts=2000.0))
    write_run(tmp_path, answered_run("bbb333", "middle", ts=1500.0))

    assert [s.question for s in list_runs(tmp_path)] == ["new", "middle", "old"]
    assert find_run(tmp_path, "b").name == "bbb333.jsonl"
    assert find_run(tmp_path, "aab222").name == "aab222.jsonl"
    with pytest.raises(RunNotFound, match="matches 2 runs"):
        find_run(tmp_path, "aa")
    with pytest.raises(RunNotFound, match="thinkbox runs list") as info:
        find_run(tmp_path, "zzz")
    assert isinstance(info.value, ThinkboxError)


def test_list_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "never") == []


def test_runs_live_under_the_data_dir(tmp_path: Path) -> None:
    assert runs_dir(Settings(data_dir=tmp_path)) == tmp_path / "runs"
    assert runs_dir(tmp_path) == tmp_path / "runs"


def test_notebook_has_thoughts_code_outputs_images_errors_and_the_answer(tmp_path: Path) -> None:
    path = write_run(tmp_path, answered_run())

    nb = export_notebook(path, tmp_path / "out" / "run.ipynb")

    nbformat.validate(nb)
    again = nbformat.read(str(tmp_path / "out" / "run.ipynb"), as_version=4)
    nbformat.validate(again)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "markdown", "code", "markdown", "code", "markdown", "markdown"]
    assert nb.cells[0].source.startswith("# What is 6*7?")
    assert "Multiply." in nb.cells[1].source
    first, second = nb.cells[2], nb.cells[4]
    assert first.source == "print(x * 7)"
    (error,) = first.outputs
    assert (error.output_type, error.ename, error.traceback) == (
        "error",
        "NameError",
        ["Traceback", "NameError: x"],
    )
    assert [o.output_type for o in second.outputs] == ["stream", "stream", "display_data", "execute_result"]
    assert (second.outputs[0].name, second.outputs[0].text) == ("stdout", "6\n")
    assert second.outputs[1].text == "warning\n"
    assert second.outputs[2].data["image/png"] == PNG
    assert second.outputs[3].data["text/plain"] == "42"
    assert (first.execution_count, second.execution_count) == (1, 2)
    assert "Done." in nb.cells[5].source
    assert nb.cells[6].source.startswith("## Answer\n\n42")
    assert "321 tokens" in nb.cells[6].source


def test_notebook_uses_the_result_output_when_no_chunks_were_stored() -> None:
    events = [e.model_dump(mode="json") for e in answered_run()]
    without_chunks = [e for e in events if e["type"] != "output_chunk"]

    nb = transcript_to_notebook(without_chunks)

    code = [c for c in nb.cells if c.cell_type == "code"][1]
    assert [(o.output_type, o.get("text")) for o in code.outputs[:2]] == [
        ("stream", "6\n"),
        ("stream", "warning\n"),
    ]
    nbformat.validate(nb)


def test_notebook_of_a_timed_out_execution_says_so() -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "action_parsed",
            "step": 1,
            "thought": "loop",
            "action": "execute_code",
            "code": "while True: pass",
        },
        {"type": "execution_finished", "step": 1, "result": {"timed_out": True, "interrupted": True}},
        {"type": "limit_reached", "limit": "steps", "message": "10 steps; raise THINKBOX_AGENT__MAX_STEPS"},
    ]

    nb = transcript_to_notebook(events)

    nbformat.validate(nb)
    assert "time limit" in nb.cells[1].outputs[-1].text
    assert "THINKBOX_AGENT__MAX_STEPS" in nb.cells[-1].source
    assert json.loads(nbformat.writes(nb))["nbformat"] == 4


def test_notebook_shows_the_files_told_code_not_run_and_notices() -> None:
    events: list[dict[str, Any]] = [
        {"type": "files_previewed", "files": ["a.csv"], "text": "- a.csv (4 B, table)"},
        {"type": "action_parsed", "step": 1, "thought": "t", "action": "execute_code", "code": "print(x)"},
        {"type": "code_rejected", "step": 1, "code": "print(x)", "problems": ["line 1: undefined name 'x'"]},
        {"type": "notice", "step": 2, "kind": "docs", "message": "json.dumps(obj, *, indent=None)"},
    ]

    nb = transcript_to_notebook(events)

    nbformat.validate(nb)
    assert "- a.csv (4 B, table)" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == "print(x)" and "not run" in code[0].outputs[0].text
    assert "undefined name 'x'" in code[0].outputs[0].text
    assert "json.dumps(obj, *, indent=None)" in nb.cells[-1].source


def test_notebook_says_the_route_the_plan_the_tests_and_the_answers_check() -> None:
    events: list[dict[str, Any]] = [
        {"type": "route_chosen", "route": "code", "reason": "the setting"},
        {"type": "plan_made", "orchestration": "chain", "functions": [
            {"name": "triple", "signature": "triple(n)", "contract": "3n", "test": "assert triple(2) == 6"}]},
        {"type": "part_tested", "step": 1, "name": "triple", "passed": False, "error": "AssertionError"},
        {"type": "answer_checked", "step": 2, "answer": "7", "checks": ["numbers"], "passed": False,
         "problems": ["7 is not in any output"], "retry": True},
        {"type": "route_chosen", "route": "sideways", "reason": "a later version's route"},
    ]  # fmt: skip

    notes = [c.source for c in transcript_to_notebook(events).cells]

    assert notes == [
        "> *route: thinking in code: the setting*",
        "> *plan (chain): triple*",
        "> *triple: its test failed (check 1): AssertionError*",
        "> *answer checked (numbers): asking the model once more: 7 is not in any output*",
    ]  # an event this version cannot read is left out, the notebook still builds


def test_notebook_cells_of_javascript_and_shell_run_with_their_interpreter() -> None:
    events: list[dict[str, Any]] = [
        {"type": "action_parsed", "step": 1, "thought": "js", "action": "execute_code", "code": "1 + 1",
         "language": "js"},
        {"type": "code_started", "step": 1, "code": "1 + 1", "language": "js"},
        {"type": "execution_finished", "step": 1, "result": {"result": "2"}},
        {"type": "action_parsed", "step": 2, "thought": "sh", "action": "execute_code", "code": "ls"},
        {"type": "code_started", "step": 2, "code": "ls", "language": "sh"},
        {"type": "execution_finished", "step": 2, "result": {"stdout": "a.csv\n"}},
        {"type": "code_started", "step": 3, "code": "x = 1", "language": "py"},
    ]  # fmt: skip

    nb = transcript_to_notebook(events)

    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    # step 2's action named no language (agent.language sh): its code_started says sh, one cell
    assert [c.source for c in cells] == ["%%script node\n1 + 1", "%%bash\nls", "x = 1"]
    assert [c.metadata.get("thinkbox", {}).get("language") for c in cells] == ["js", "sh", None]
