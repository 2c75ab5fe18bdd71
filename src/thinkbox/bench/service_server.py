"""The parts of ``thinkbox bench service`` around the service: the ``thinkbox serve`` child process, the
scripts of its scripted model, its users, and a description of the machine."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from thinkbox.errors import ThinkboxError


class ChildServer:
    """``thinkbox serve`` as a child process on a fixed loopback port."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        self.data_dir, self.port, self.env = data_dir, port, env
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start it; seconds until /healthz answered."""
        started = time.perf_counter()
        command = [sys.executable, "-c", "from thinkbox.cli.app import main; main()", "serve", "--port",
                   str(self.port), "--data-dir", str(self.data_dir), "--log-level", "warning"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise ThinkboxError(f"thinkbox serve exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.05)
        self.kill()
        raise ThinkboxError(f"thinkbox serve did not answer in {timeout:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def peak_rss_mib(self) -> float | None:
        with contextlib.suppress(OSError, AttributeError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def write_script(path: Path, codes: Sequence[str]) -> Path:
    replies: list[dict[str, str]] = [
        {"thought": f"step {k}", "action": "execute_code", "code": code, "final_answer": ""}
        for k, code in enumerate(codes, 1)
    ]
    replies.append({"thought": "done", "action": "provide_answer", "code": "", "final_answer": "42"})
    path.write_text(json.dumps({"by_step": True, "replies": replies}), encoding="utf-8")
    return path


def database_url(data_dir: Path) -> str:
    """The bench's own SQLite database (whatever ``service.database_url`` the configuration names)."""
    return f"sqlite:///{data_dir}/thinkbox.db"


def make_users(data_dir: Path, tenants: int, users: int) -> list[str]:
    """Keys of ``users`` users spread over ``tenants`` tenants, made in the server's database."""
    from thinkbox.service import accounts
    from thinkbox.service.db.engine import Database

    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.open(database_url(data_dir))
    try:
        for t in range(tenants):
            accounts.create_tenant(db, f"tenant{t}")
        keys = []
        for u in range(users):
            accounts.create_user(db, f"tenant{u % tenants}", f"user{u}")
            keys.append(accounts.create_key(db, f"tenant{u % tenants}", f"user{u}")[1])
        return keys
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "loadavg_1m_at_start": os.getloadavg()[0]}  # fmt: skip
