"""``thinkbox serve`` refuses to start, saying why, when its database cannot be written or reached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .service_support import free_port

THINKBOX = str(Path(sys.executable).with_name("thinkbox"))


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [THINKBOX, "serve", "--port", str(free_port()), *args]
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
