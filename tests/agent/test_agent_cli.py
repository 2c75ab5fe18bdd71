"""``thinkbox ask`` and ``thinkbox chat`` with the scripted model and a real sandbox."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from process_support import descendants, still_alive
from terminal_support import sigint_as_in_a_terminal
from thinkbox.cli.app import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "THINKBOX_DATA_DIR": str(tmp_path / "data"),
        "THINKBOX_CONFIG": str(tmp_path / "no-config.toml"),
    }
    if os.environ.get("THINKBOX_TEST_BACKEND"):
        values["THINKBOX_SANDBOX__BACKEND"] = os.environ["THINKBOX_TEST_BACKEND"]
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def script(tmp_path: Path, *replies: Any) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(list(replies)), encoding="utf-8")
    return str(path)


CODE = {"thought": "multiply", "action": "execute_code", "code": "print(48271 * 9173)", "final_answer": ""}
ANSWER = {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "442789883"}


def ask(*args: str) -> Any:
    return CliRunner().invoke(app, ["ask", *args])


def test_ask_json_prints_events_and_ends_with_the_final_answer(tmp_path: Path, env: dict[str, str]) -> None:
    result = ask("--json", "--model", "scripted", "--script", script(tmp_path, CODE, ANSWER), "48271 * 9173?")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "run_started"
    assert any(e["type"] == "output_chunk" and e["text"] == "442789883\n" for e in lines)
    last = lines[-1]
    assert (last["type"], last["answer"], last["steps"]) == ("final_answer", "442789883", 2)
    assert last["tokens"] > 0 and last["duration_s"] >= 0
    transcript = Path(env["THINKBOX_DATA_DIR"]) / "runs" / f"{lines[0]['run_id']}.jsonl"
    stored = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    assert [e["type"] for e in stored] == [e["type"] for e in lines] + ["run_finished"]


def test_ask_exits_1_with_a_limit_event_last(tmp_path: Path, env: dict[str, str]) -> None:
    replies = [CODE] * 3
    result = ask(
        "--json", "--max-steps", "2", "--model", "scripted", "--script", script(tmp_path, *replies), "q"
    )
    assert result.exit_code == 1, result.output
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["type"], last["limit"], last["steps"]) == ("limit_reached", "steps", 2)


def test_ask_renders_answer_and_summary_and_copies_files(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n", encoding="utf-8")
    code = {**CODE, "code": "import pandas as pd\nprint(pd.read_csv('numbers.csv')['n'].sum())"}
    answer = {**ANSWER, "final_answer": "6"}
    result = ask(
        "--file", str(data), "--model", "scripted", "--script", script(tmp_path, code, answer), "sum?"
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "files: numbers.csv" in out
    assert "╭─ executing" in out and "╭─ answer" in out
    assert "\n6\n" in out
    assert "2 steps ·" in out and "tokens · run " in out


def test_ask_saves_figures_and_shows_their_paths(tmp_path: Path, env: dict[str, str]) -> None:
    plot = {**CODE, "code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"}
    result = ask("--model", "scripted", "--script", script(tmp_path, plot, ANSWER), "plot it")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("figure saved: "))
    path = Path(line.removeprefix("figure saved: "))
    assert path.is_relative_to(Path(env["THINKBOX_DATA_DIR"]) / "figures")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "/no/such/file.xlsx", "q"], "--file /no/such/file.xlsx: the file does not exist"),
        (["  "], "the question is empty"),
        (["x" * 60_000], "more than the limit of 50,000"),
        (["--model", "scripted", "q"], "THINKBOX_MODEL__SCRIPT (or --script)"),
        (["--script", "no-such-script.json", "q"], "cannot read the model script"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str, env: dict[str, str]) -> None:
    result = ask(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_unknown_sandbox_backend_names_the_setting(tmp_path: Path, env: dict[str, str]) -> None:
    result = ask("--json", "--backend", "nope", "--script", script(tmp_path, ANSWER), "q")
    assert result.exit_code == 2
    assert "THINKBOX_SANDBOX__BACKEND" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["type"] == "run_error"


def test_chat_answers_follow_up_questions_in_one_session(tmp_path: Path, env: dict[str, str]) -> None:
    replies = [
        {**CODE, "code": "x = 48271 * 9173\nprint(x)"},
        ANSWER,
        {**CODE, "code": "print(x + 1)"},
        {**ANSWER, "final_answer": "442789884"},
    ]
    result = CliRunner().invoke(
        app,
        ["chat", "--model", "scripted", "--script", script(tmp_path, *replies)],
        input="48271 * 9173?\nplus one?\n\n",
    )
    assert result.exit_code == 0, result.output
    assert "442789883" in result.stdout and "442789884" in result.stdout
    assert "NameError" not in result.stdout


def test_ctrl_c_while_code_runs_exits_130_and_leaves_no_process(tmp_path: Path, env: dict[str, str]) -> None:
    hang = {**CODE, "code": "import time\nprint('started', flush=True)\ntime.sleep(60)"}
    cmd = [sys.executable, "-c", "from thinkbox.cli.app import main; main()", "ask", "--json"]
    cmd += ["--model", "scripted", "--script", script(tmp_path, hang, ANSWER), "hang please"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("text") == "started\n":
                break
        else:
            pytest.fail(f"the code never started: {proc.stderr.read() if proc.stderr else ''}")
        tree = set(descendants(proc.pid)) - {proc.pid}
        assert tree, "the sandbox runs in child processes of the CLI"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == 130
    assert elapsed < 10
    assert proc.stderr is not None and "cancelled" in proc.stderr.read()
    assert still_alive(sorted(tree), 5) == []


def _chat_server_class() -> Any:
    """The OpenAI-protocol test server of tests/models (a real HTTP server on 127.0.0.1)."""
    path = Path(__file__).parents[1] / "models" / "chat_server.py"
    spec = importlib.util.spec_from_file_location("agent_tests_chat_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ChatServer


def test_ask_through_an_openai_compatible_endpoint(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with _chat_server_class()() as server:
        reply = json.dumps(ANSWER)
        server.state.reply = [reply[i : i + 7] for i in range(0, len(reply), 7)]
        result = ask("--json", "--base-url", server.base_url, "--model", "test-model", "48271 * 9173?")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[-1])["answer"] == "442789883"
        sent = server.state.requests[-1]
        assert sent["model"] == "test-model" and sent["messages"][0]["role"] == "system"
        wrong = ask("--json", "--base-url", server.base_url, "--model", "no-such-model", "q")
    assert wrong.exit_code == 2, wrong.output
    last = json.loads(wrong.stdout.splitlines()[-1])
    assert last["type"] == "run_error" and "no-such-model" in last["message"]


def test_ctrl_c_in_chat_stops_that_answer_and_the_chat_goes_on(tmp_path: Path, env: dict[str, str]) -> None:
    hang = {**CODE, "code": "kept = 41\nimport time\nprint('started', flush=True)\ntime.sleep(60)"}
    after = {**CODE, "code": "print(kept + 1)"}
    replies = [hang, after, {**ANSWER, "final_answer": "forty-two"}]
    cmd = [sys.executable, "-c", "from thinkbox.cli.app import main; main()", "chat"]
    cmd += ["--model", "scripted", "--script", script(tmp_path, *replies)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
        env={**os.environ, **env, "COLUMNS": "100"},
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("hang please\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.strip() == "started":
                break
        else:
            pytest.fail("the code never started")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("and now?\n\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "interrupted" in out
    assert "42" in out and "forty-two" in out  # the variable from before the interrupt is still there
