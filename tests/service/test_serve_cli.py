"""``thinkbox serve`` refuses to start, saying why, when its database cannot be written or reached or its port
is taken."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .service_support import free_port

THINKBOX = str(Path(sys.executable).with_name("thinkbox"))


def serve(*args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [THINKBOX, "serve", "--port", str(port or free_port()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_data_dir_that_cannot_hold_the_database_stops_the_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc = serve("--data-dir", str(not_a_dir / "data"))
    assert proc.returncode == 2, proc.stderr
    assert "thinkbox serve:" in proc.stderr and "--data-dir" in proc.stderr
    assert "Uvicorn running" not in proc.stderr


def test_an_unreachable_database_stops_the_start(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://thinkbox:secret@127.0.0.1:{free_port()}/nothing"
    proc = serve("--data-dir", str(tmp_path), "--database-url", url)
    assert proc.returncode == 2, proc.stderr
    assert "cannot connect" in proc.stderr and "secret" not in proc.stderr


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the service start after all, it loads no model."""
    monkeypatch.setenv("THINKBOX_MODEL__PROVIDER", "scripted")
    script = tmp_path / "script.json"
    script.write_text('[{"thought": "", "action": "provide_answer", "code": "", "final_answer": "x"}]')
    monkeypatch.setenv("THINKBOX_MODEL__SCRIPT", str(script))


@pytest.mark.usefixtures("scripted")
def test_a_port_in_use_stops_the_start_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve("--data-dir", str(tmp_path), port=port)
    assert proc.returncode == 2, proc.stderr
    assert f"thinkbox serve: port {port} of 127.0.0.1 is in use" in proc.stderr and "--port" in proc.stderr
    assert "Application startup" not in proc.stderr  # said before the service started, not after


@pytest.mark.usefixtures("scripted")
@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--log-level", "loud", "unknown --log-level 'loud'; use one of: critical, error, warning, info"),
        ("--backend", "nope", "unknown sandbox backend 'nope'; set THINKBOX_SANDBOX__BACKEND or --backend"),
    ],
)
def test_an_unknown_log_level_or_backend_stops_the_start_naming_it(
    tmp_path: Path, flag: str, value: str, said: str
) -> None:
    proc = serve("--data-dir", str(tmp_path), flag, value)
    assert proc.returncode == 2 and f"thinkbox serve: {said}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Application startup" not in proc.stderr


def test_a_start_the_service_refuses_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing model (here the scripted model's file) fails the app's start: said in one line, not in the
    traceback uvicorn printed with it, and with exit status 2."""
    monkeypatch.setenv("THINKBOX_MODEL__PROVIDER", "scripted")
    monkeypatch.setenv("THINKBOX_MODEL__SCRIPT", str(tmp_path / "missing.json"))
    proc = serve("--data-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert f"thinkbox serve: cannot read the model script '{tmp_path / 'missing.json'}'" in proc.stderr
    assert "Traceback" not in proc.stderr and "did not start" in proc.stderr
