"""``thinkbox exec`` as a user runs it: a subprocess of the installed entry point, a real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

THINKBOX = Path(sys.executable).parent / "thinkbox"
RUN_TIMEOUT_S = 120


def _exec(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(THINKBOX), "exec", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def backend() -> str:
    """The default backend when it runs here, else bwrap; skip (saying why) when neither does."""
    reasons = []
    for name in ("zygote", "bwrap"):
        proc = _exec("--backend", name, "-", stdin="1")
        if proc.returncode == 0:
            return name
        reasons.append(f"{name}: {proc.stderr.strip()[-300:]}")
    pytest.skip("no sandbox backend runs here: " + "; ".join(reasons))


def test_code_from_stdin_prints_output_then_the_value(backend: str) -> None:
    proc = _exec("--backend", backend, "-", stdin="print('hello')\nx = 20\nx + 22\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello\n42\n"


def test_code_from_a_file_runs_and_saves_figures(backend: str, tmp_path: Path) -> None:
    script = tmp_path / "plot.py"
    script.write_text("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint('plotted')\n")
    figures = tmp_path / "figures"
    proc = _exec("--backend", backend, "--figures-dir", str(figures), str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plotted\n")
    (png,) = figures.glob("*.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert str(png) in proc.stderr


def test_json_carries_output_value_error_and_timing(backend: str, tmp_path: Path) -> None:
    proc = _exec(
        "--json", "--backend", backend, "--figures-dir", str(tmp_path), "-", stdin="print('out')\n2 * 21"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in (
        "stdout",
        "stderr",
        "result",
        "error",
        "timed_out",
        "duration_ms",
        "interrupted",
        "killed",
        "state_survived",
        "output_truncated",
        "display_count",
    ):
        assert key in data
    assert data["stdout"] == "out\n"
    assert data["result"] == "42"
    assert data["error"] is None
    assert data["timed_out"] is False
    assert isinstance(data["duration_ms"], float)


def test_code_that_raises_exits_1_with_its_traceback(backend: str) -> None:
    proc = _exec("--backend", backend, "-", stdin="def f():\n    return 1 / 0\nf()\n")
    assert proc.returncode == 1
    assert "ZeroDivisionError: division by zero" in proc.stderr
    assert "line 2, in f" in proc.stderr
    assert "thinkbox" not in proc.stderr.split("Traceback", 1)[1]  # no engine frames


def test_timeout_exits_1_and_says_so_in_json(backend: str) -> None:
    proc = _exec(
        "--json", "--timeout", "0.5", "--backend", backend, "-", stdin="import time\ntime.sleep(30)\n"
    )
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["timed_out"] is True
    assert data["error"] is not None
    assert data["duration_ms"] < 10_000


def test_unknown_backend_is_an_infrastructure_error_exit_2_without_traceback() -> None:
    proc = _exec("--backend", "no-such-backend", "-", stdin="1")
    assert proc.returncode == 2
    assert "unknown sandbox backend 'no-such-backend'" in proc.stderr
    assert "--backend" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_backend_from_configuration_is_used_when_no_flag_is_given() -> None:
    proc = _exec("-", stdin="1", env={"THINKBOX_SANDBOX__BACKEND": "no-such-backend"})
    assert proc.returncode == 2
    assert "no-such-backend" in proc.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = _exec(str(tmp_path / "absent.py"))
    assert proc.returncode == 2
    assert "absent.py" in proc.stderr
    assert "Traceback" not in proc.stderr
