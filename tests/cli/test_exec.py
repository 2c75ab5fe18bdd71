"""``thinkbox exec`` as a user runs it: a subprocess of the installed entry point, a real sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from process_support import alive, descendants

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


def test_rich_value_is_printed_once_as_text(backend: str, tmp_path: Path) -> None:
    code = "import pandas as pd\npd.DataFrame({'col': [7]})\n"
    proc = _exec("--backend", backend, "--figures-dir", str(tmp_path), "-", stdin=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("col") == 1
    assert not list(tmp_path.iterdir())


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


def test_code_that_is_not_utf8_exits_2_naming_where_it_came_from(tmp_path: Path) -> None:
    binary = b"print(1)\n\xd0\xff\n"
    (tmp_path / "binary.py").write_bytes(binary)
    for source, stdin in ((str(tmp_path / "binary.py"), None), ("-", binary)):
        proc = subprocess.run(
            [str(THINKBOX), "exec", source], input=stdin, capture_output=True, timeout=RUN_TIMEOUT_S
        )
        said = "stdin" if source == "-" else source
        assert proc.returncode == 2 and f"cannot read {said}: 'utf-8' codec" in proc.stderr.decode(), (
            proc.stderr
        )
        assert b"Traceback" not in proc.stderr


def _ctrl_c(backend: str, code: str, presses: int) -> tuple[int, str, list[int]]:
    """Run code, press Ctrl-C ``presses`` times: SIGINT to the process group, as a terminal does."""
    proc = subprocess.Popen(
        [str(THINKBOX), "exec", "--backend", backend, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(code)
    proc.stdin.close()
    assert proc.stdout.readline() == "started\n"
    tree = descendants(proc.pid)
    for _ in range(presses):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
    returncode = proc.wait(timeout=30)
    stderr = proc.stderr.read()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    return returncode, stderr, [pid for pid in tree if alive(pid)]


def test_ctrl_c_interrupts_the_code_and_leaves_no_process(backend: str) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    returncode, stderr, left = _ctrl_c(backend, code, presses=1)
    assert returncode == 1
    assert "KeyboardInterrupt" in stderr
    assert left == []


def test_second_ctrl_c_kills_code_that_ignores_the_interrupt(backend: str) -> None:
    code = (
        "import time\nprint('started', flush=True)\n"
        "while True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass\n"
    )
    returncode, stderr, left = _ctrl_c(backend, code, presses=2)
    assert "zygote died" not in stderr, (
        "the terminal's SIGINT reached the fork server: start it in its own session"
    )
    assert returncode == 130, stderr
    assert "cancelled" in stderr
    assert left == []


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


def test_escape_sequences_from_the_sandbox_never_reach_the_terminal(backend: str) -> None:
    code = (
        f"import sys\nE = {ESCAPES!r}\n"
        "print('out' + E)\nprint('err' + E, file=sys.stderr)\n"
        "class V:\n    def __repr__(self):\n        return 'value' + E\n"
        "display(V())\n"
        "def boom():\n    raise ValueError('boom' + E)\n"
        "boom()\n"
    )
    proc = _exec("--backend", backend, "-", stdin=code)
    assert proc.returncode == 1
    for text in (proc.stdout, proc.stderr):
        assert not any(c in text for c in "\x1b\x07\x9b"), repr(text)
    assert "out\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\n" in proc.stdout
    assert "value\\x1b]0;pwned" in proc.stdout
    assert "err\\x1b]0;pwned" in proc.stderr
    assert "ValueError: boom\\x1b]0;pwned" in proc.stderr


def test_json_output_keeps_the_text_exactly(backend: str) -> None:
    proc = _exec("--json", "--backend", backend, "-", stdin=f"print({ESCAPES!r})")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout  # JSON escapes control characters
    assert json.loads(proc.stdout)["stdout"] == ESCAPES + "\n"


def test_a_hundred_figures_leave_at_most_the_cap_of_files(backend: str, tmp_path: Path) -> None:
    code = (
        "PNG = b'\\x89PNG\\r\\n\\x1a\\n' + bytes(100)\n"
        "class Figure:\n    def _repr_png_(self):\n        return PNG\n"
        "for i in range(100):\n    display(Figure())\n"
    )
    proc = _exec("--json", "--backend", backend, "--figures-dir", str(tmp_path), "-", stdin=code)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    files = list(tmp_path.iterdir())
    assert len(files) == data["display_count"] == 32  # sandbox.limits.display_items
    assert data["display_dropped"] == 68
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in files)

    proc = _exec("--backend", backend, "--figures-dir", str(tmp_path / "plain"), "-", stdin=code)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "plain").iterdir())) == 32
    assert "68 display item(s) were dropped" in proc.stderr


def test_language_from_the_suffix_or_the_option_with_the_same_json(backend: str, tmp_path: Path) -> None:
    script = tmp_path / "check.js"
    script.write_text("console.log('from node');\nconst n = await Promise.resolve(21);\nn * 2\n")
    proc = _exec("--backend", backend, "--json", str(script))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stdout"] == "from node\n" and out["result"] == "42" and out["error"] is None, out
    proc = _exec("--backend", backend, "--json", "--language", "sh", "-", stdin="cd /tmp; x=5; echo $x $PWD")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stdout"] == "5 /tmp\n"


def test_unknown_language_is_refused_naming_the_choices(backend: str) -> None:
    proc = _exec("--backend", backend, "--language", "ruby", "-", stdin="puts 1")
    assert proc.returncode != 0 and "use one of py, js, sh" in proc.stderr, proc.stderr
