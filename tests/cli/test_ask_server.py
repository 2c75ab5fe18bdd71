"""``thinkbox ask --server URL`` as a user runs it: the installed entry point in a subprocess, against a real
service (uvicorn in a thread of the test process, real sandboxes, the question-programmed model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from thinkbox.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the service tests' helpers
from service.service_support import (
    Account,
    QuestionModel,
    ThreadServer,
    free_port,
    make_account,
    program,
    service_settings,
)

THINKBOX = Path(sys.executable).parent / "thinkbox"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    settings = service_settings(tmp_path_factory.mktemp("ask-server"), None)
    running = ThreadServer(settings, QuestionModel()).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def dave(server: ThreadServer) -> Account:
    return make_account(server.service.db, "initech", "dave")


def _ask(tmp_path: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "THINKBOX_API_KEY"}
    env |= {"THINKBOX_DATA_DIR": str(tmp_path / "local"), "COLUMNS": "200"}
    if key is not None:
        env["THINKBOX_API_KEY"] = key
    return subprocess.run([str(THINKBOX), "ask", *args], capture_output=True, text=True, timeout=120, env=env)


def test_ask_server_uploads_the_file_shows_the_run_and_exits_0(
    server: ThreadServer, dave: Account, tmp_path: Path
) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("6 7\n")
    code = "a, b = map(int, open('numbers.txt').read().split())\nprint(a * b)"
    proc = _ask(tmp_path, program([code], "forty-two"), "--server", server.url, "--file", str(numbers),
                key=dave.key)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout and "forty-two" in proc.stdout
    with Client(server.url, dave.key) as client:
        (run,) = client.list_runs(limit=1).runs
        assert run.files == ["numbers.txt"] and run.status == "succeeded" and run.answer == "forty-two"
        assert client.download("numbers.txt") == b"6 7\n"


def test_ask_server_json_prints_the_same_event_lines_as_a_local_run(
    server: ThreadServer, dave: Account, tmp_path: Path
) -> None:
    proc = _ask(tmp_path, program(["print(6 * 7)"], "42"), "--server", server.url, "--api-key", dave.key,
                "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["type"] == "run_started" and lines[0]["run_id"].startswith("r_")
    assert lines[-1] == {**lines[-1], "type": "final_answer", "answer": "42"}
    assert "".join(e["text"] for e in lines if e["type"] == "output_chunk") == "42\n"


def test_ask_server_route_is_the_runs_route(server: ThreadServer, dave: Account, tmp_path: Path) -> None:
    proc = _ask(tmp_path, program(["print(1)"], "1"), "--server", server.url, "--api-key", dave.key, "--json",
                "--route", "direct")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["run_started", "route_chosen", "final_answer"]
    assert lines[1]["route"] == "direct"


def test_a_bad_key_exits_2_with_a_clear_message(server: ThreadServer, tmp_path: Path) -> None:
    proc = _ask(tmp_path, "What is 1 + 1?", "--server", server.url, "--api-key", "tbk_not_a_key")
    assert proc.returncode == 2
    assert "invalid or revoked API key" in proc.stderr and server.url in proc.stderr
    missing = _ask(tmp_path, "What is 1 + 1?", "--server", server.url)
    assert missing.returncode == 2 and "THINKBOX_API_KEY" in missing.stderr


def test_an_unreachable_server_and_local_only_options_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = _ask(tmp_path, "What is 1 + 1?", "--server", url, key="tbk_x")
    assert proc.returncode == 2 and f"cannot reach the thinkbox service at {url}" in proc.stderr
    proc = _ask(tmp_path, "What is 1 + 1?", "--server", url, "--backend", "bwrap", key="tbk_x")
    assert proc.returncode == 2 and "--backend cannot be used with --server" in proc.stderr
