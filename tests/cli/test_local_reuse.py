"""``thinkbox ask`` uses a ``thinkbox serve`` running on the same data dir (its model already loaded), as a
user runs them: both entry points in subprocesses, the scripted model, real sandboxes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thinkbox.config import load_settings
from thinkbox.service import local

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the service tests' helpers
from service.service_support import ProcessServer

THINKBOX = Path(sys.executable).parent / "thinkbox"
CODE = {"thought": "multiply", "action": "execute_code", "code": "print(6 * 7)", "final_answer": ""}
ANSWER = {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "42"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"by_step": True, "replies": [CODE, ANSWER]}), encoding="utf-8")
    values = {k: v for k, v in os.environ.items() if not k.startswith("THINKBOX_")}
    return values | {
        "THINKBOX_CONFIG": str(tmp_path / "no-config.toml"),
        "THINKBOX_DATA_DIR": str(tmp_path / "data"),
        "THINKBOX_CACHE_DIR": str(tmp_path / "cache"),
        "THINKBOX_MODEL__PROVIDER": "scripted",
        "THINKBOX_MODEL__SCRIPT": str(script),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


@pytest.fixture
def served(tmp_path: Path, env: dict[str, str]) -> Iterator[ProcessServer]:
    server = ProcessServer(tmp_path / "data", env).start()
    try:
        yield server
    finally:
        server.stop()


def ask(env: dict[str, str], *args: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    proc = subprocess.run([str(THINKBOX), "ask", "--json", *args, "What is 6 * 7?"], capture_output=True,
                          text=True, timeout=180, env=env | extra)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


def discovery(tmp_path: Path) -> Path:
    return tmp_path / "data" / local.DISCOVERY_FILE


def test_ask_uses_the_local_service_and_serve_removes_its_file_on_exit(
    served: ProcessServer, env: dict[str, str], tmp_path: Path
) -> None:
    path = discovery(tmp_path)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    data = json.loads(path.read_text())
    assert data["url"] == served.url and data["key"] and data["pid"] == served.proc.pid  # type: ignore[union-attr]

    proc, events = ask(env)
    assert f"asking thinkbox serve at {served.url}" in proc.stderr
    assert events[0]["run_id"].startswith("r_")  # a run of the service
    assert events[-1]["type"] == "final_answer" and events[-1]["answer"] == "42"

    proc, events = ask(env, "--no-serve")
    assert "thinkbox serve" not in proc.stderr and not events[0]["run_id"].startswith("r_")
    assert events[-1]["answer"] == "42"
    proc, events = ask(env, THINKBOX_SERVICE__LOCAL_REUSE="false")
    assert not events[0]["run_id"].startswith("r_")

    served.stop()
    assert not path.exists()
    proc, events = ask(env)  # no service any more: the model is loaded here
    assert "thinkbox serve" not in proc.stderr and events[-1]["answer"] == "42"


def test_a_route_given_to_ask_reaches_the_local_service(served: ProcessServer, env: dict[str, str]) -> None:
    _, events = ask(env, "--route", "code")
    assert events[0]["run_id"].startswith("r_")
    assert [e["route"] for e in events if e["type"] == "route_chosen"] == ["code"]


def test_a_stale_or_readable_discovery_file_is_ignored(tmp_path: Path, env: dict[str, str]) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    path = local.discovery_path(settings)
    path.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fields = {"url": "http://127.0.0.1:9", "key": "k", "key_id": "x", "pid": dead.pid}
    path.write_text(json.dumps(fields))
    path.chmod(0o600)
    assert local.find(settings) is None  # its process is gone
    fields["pid"] = os.getpid()
    path.write_text(json.dumps(fields))
    assert local.find(settings) is None  # alive, but nothing answers at that URL
    path.chmod(0o644)
    assert local._read(path) is None  # others could read its key: not trusted
    path.chmod(0o600)
    path.write_text("{not json")
    assert local._read(path) is None
    started = time.monotonic()
    proc, events = ask(env | {"THINKBOX_DATA_DIR": str(tmp_path / "data")})
    assert "thinkbox serve" not in proc.stderr and events[-1]["answer"] == "42"
    assert time.monotonic() - started < 170
