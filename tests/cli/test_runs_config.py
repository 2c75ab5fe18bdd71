"""``thinkbox runs ...`` and ``thinkbox config show`` through the real CLI app (and one real ``ask``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from terminal_support import sigint_as_in_a_terminal
from thinkbox.agent import events as ev
from thinkbox.cli.app import app
from thinkbox.sandbox.types import ExecutionResult
from thinkbox.transcripts import TranscriptWriter

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("THINKBOX_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    values = {"THINKBOX_CONFIG": str(tmp_path / "config.toml"), "THINKBOX_DATA_DIR": str(tmp_path / "data")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def store_run(data_dir: Path, run_id: str, question: str, answer: str | None, ts: float) -> None:
    result = ExecutionResult(result="2")
    with TranscriptWriter(data_dir) as writer:
        writer.write(ev.RunStarted(ts=ts, run_id=run_id, question=question, model="m", sandbox="zygote"))
        writer.write(ev.StepStarted(ts=ts, step=1))
        writer.write(ev.ActionParsed(ts=ts, step=1, thought="t", action="execute_code", code="1+1"))
        writer.write(ev.CodeStarted(ts=ts, step=1, code="1+1"))
        writer.write(ev.ExecutionFinished(ts=ts, step=1, result=result, observation="2"))
        if answer is not None:
            writer.write(ev.FinalAnswer(ts=ts, answer=answer, steps=2, duration_s=1.0, tokens=9))


def test_runs_list_shows_id_status_question_and_answer(env: dict[str, str]) -> None:
    data = Path(env["THINKBOX_DATA_DIR"])
    store_run(data, "abc123", "What is one plus one?", "2", 1000.0)
    store_run(data, "def456", "Interrupted question", None, 2000.0)

    result = runner.invoke(app, ["runs", "list"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "def456" in lines[1] and "incomplete" in lines[1]
    assert "abc123" in lines[2] and "answered" in lines[2] and "What is one plus one?" in lines[2]


def test_runs_list_json_and_data_dir_flag(env: dict[str, str], tmp_path: Path) -> None:
    store_run(tmp_path / "elsewhere", "abc123", "q", "2", 1000.0)

    result = runner.invoke(app, ["runs", "list", "--json", "--data-dir", str(tmp_path / "elsewhere")])

    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert (row["run_id"], row["answer"], row["steps"], row["status"]) == ("abc123", "2", 2, "answered")


def test_runs_show_by_prefix(env: dict[str, str]) -> None:
    store_run(Path(env["THINKBOX_DATA_DIR"]), "abc123", "What is one plus one?", "2", 1000.0)

    result = runner.invoke(app, ["runs", "show", "abc"])

    assert result.exit_code == 0, result.output
    assert "1+1" in result.output
    assert "answered" in result.output
    assert "skipped" not in result.output

    raw = runner.invoke(app, ["runs", "show", "abc", "--json"])
    assert json.loads(raw.output.splitlines()[0])["type"] == "run_started"


def test_runs_show_and_export_skip_a_damaged_line(env: dict[str, str], tmp_path: Path) -> None:
    data = Path(env["THINKBOX_DATA_DIR"])
    store_run(data, "abc123", "What is one plus one?", "2", 1000.0)
    with (data / "runs" / "abc123.jsonl").open("ab") as f:
        f.write(b"\xff\xfe not UTF-8\n")

    result = runner.invoke(app, ["runs", "show", "abc"])
    assert result.exit_code == 0 and "1 line(s) could not be read and were skipped" in result.output
    assert runner.invoke(app, ["runs", "show", "abc", "--json"]).exit_code == 0
    result = runner.invoke(app, ["runs", "export", "abc", "-o", str(tmp_path / "run.ipynb")])
    assert result.exit_code == 0 and (tmp_path / "run.ipynb").is_file(), result.output


@pytest.mark.parametrize("command", ["show", "export"])
def test_unknown_run_id_is_a_clear_error_with_exit_2(env: dict[str, str], command: str) -> None:
    result = runner.invoke(app, ["runs", command, "nope"])

    assert result.exit_code == 2
    assert "no stored run has the id 'nope'" in result.output
    assert "thinkbox runs list" in result.output


def test_runs_export_writes_a_valid_notebook(env: dict[str, str], tmp_path: Path) -> None:
    store_run(Path(env["THINKBOX_DATA_DIR"]), "abc123", "What is one plus one?", "2", 1000.0)
    out = tmp_path / "nb" / "run.ipynb"

    result = runner.invoke(app, ["runs", "export", "abc", "--format", "ipynb", "-o", str(out)])

    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code", "markdown"]


def test_runs_export_refuses_an_unknown_format(env: dict[str, str]) -> None:
    store_run(Path(env["THINKBOX_DATA_DIR"]), "abc123", "q", "2", 1000.0)

    result = runner.invoke(app, ["runs", "export", "abc", "--format", "pdf"])

    assert result.exit_code == 2
    assert "--format ipynb" in result.output


def test_config_show_masks_the_key_and_names_the_file(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(env["THINKBOX_CONFIG"]).write_text('[model]\nname = "file-model"\n')
    monkeypatch.setenv("THINKBOX_MODEL__API_KEY", "sk-very-secret-key-1234")

    text = runner.invoke(app, ["config", "show"])
    as_json = runner.invoke(app, ["config", "show", "--json"])

    assert text.exit_code == 0 and as_json.exit_code == 0, text.output + as_json.output
    assert env["THINKBOX_CONFIG"] in text.output
    assert "very-secret" not in text.output + as_json.output
    data = json.loads(as_json.output)
    assert data["config_file"] == env["THINKBOX_CONFIG"]
    assert data["settings"]["model"]["name"] == "file-model"
    assert data["settings"]["model"]["api_key"] == "sk-…34"
    assert data["sources"]["model.name"] == "file"
    assert data["sources"]["model.api_key"] == "env"
    assert data["sources"]["agent.max_steps"] == "default"


def test_config_show_with_a_typo_in_the_file_exits_2_naming_the_key(env: dict[str, str]) -> None:
    Path(env["THINKBOX_CONFIG"]).write_text("[agent]\nmax_step = 3\n")

    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 2
    assert "agent.max_step" in result.output
    assert env["THINKBOX_CONFIG"] in result.output


def test_a_real_ask_is_stored_listed_and_exported(env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    replies = [
        {"thought": "try", "action": "execute_code", "code": "print(rate)", "final_answer": ""},
        {
            "thought": "fix",
            "action": "debug_error",
            "code": "rate = 0.06\nprint(rate * 100)",
            "final_answer": "",
        },
        {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "6.0"},
    ]
    script.write_text(json.dumps(replies))
    thinkbox = [str(Path(sys.executable).parent / "thinkbox")]

    backend = asyncio.run(_first_sandbox())
    if backend is None:
        pytest.skip("no sandbox backend starts here")
    ask = subprocess.run(
        [*thinkbox, "ask", "--backend", backend, "--script", str(script), "What is the rate in percent?"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "THINKBOX_AGENT__LINT": "false"},  # the sandbox's NameError, for the notebook
    )  # fmt: skip
    assert ask.returncode == 0, ask.stderr

    listed = runner.invoke(app, ["runs", "list", "--json"])
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["question"], row["answer"], row["steps"], row["status"]) == (
        "What is the rate in percent?", "6.0", 3, "answered"
    )  # fmt: skip
    out = tmp_path / "run.ipynb"
    assert runner.invoke(app, ["runs", "export", row["run_id"][:6], "-o", str(out)]).exit_code == 0
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0].ename == "NameError"
    assert code[1].outputs[0].text == "6.0\n"


async def _first_sandbox() -> str | None:
    from thinkbox.errors import ThinkboxError
    from thinkbox.sandbox import registry

    for name in ["zygote", "bwrap"]:
        try:
            backend = registry.create_backend(name)
            await backend.start()
        except (ThinkboxError, ImportError, OSError):
            continue
        await backend.aclose()
        return name
    return None


def test_ctrl_c_during_a_run_keeps_its_transcript_up_to_that_moment(
    env: dict[str, str], tmp_path: Path
) -> None:
    backend = asyncio.run(_first_sandbox())
    if backend is None:
        pytest.skip("no sandbox backend starts here")
    script = tmp_path / "script.json"
    code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
    script.write_text(
        json.dumps([{"thought": "wait", "action": "execute_code", "code": code, "final_answer": ""}])
    )
    thinkbox = str(Path(sys.executable).parent / "thinkbox")
    ask = subprocess.Popen(
        [thinkbox, "ask", "--backend", backend, "--script", str(script), "Wait a minute?"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_as_in_a_terminal,
    )  # fmt: skip
    runs = Path(env["THINKBOX_DATA_DIR"]) / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any('"started' in p.read_text() for p in runs.glob("*.jsonl")):
        time.sleep(0.1)
    ask.send_signal(signal.SIGINT)
    ask.communicate(timeout=30)

    listed = runner.invoke(app, ["runs", "list", "--json"])
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["question"], row["status"], row["answer"]) == ("Wait a minute?", "incomplete", None)
    events = [json.loads(line) for line in Path(row["path"]).read_text().splitlines()]
    assert [e["type"] for e in events][-2:] == ["code_started", "output_chunk"]
    assert events[-1]["text"] == "started\n"
