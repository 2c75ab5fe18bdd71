"""The parts of ``thinkbox bench service``: the ``thinkbox serve`` child process, the scripts of its scripted
model, its users, the followers of runs (what each saw), and a description of the machine."""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from thinkbox.agent.events import LimitReached, RunError, RunResumed, RunStarted, StepStarted
from thinkbox.client import AsyncClient
from thinkbox.errors import ThinkboxError

QUESTION = "What is the answer? (thinkbox bench service)"


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
        """The server process's peak resident memory (VmHWM), its children not included."""
        return _status_mib(self.proc.pid, "VmHWM") if self.proc is not None else None

    def tree_pss_mib(self) -> float | None:
        """Proportional memory (PSS: shared pages split between their sharers) of the server and every
        process below it, now."""
        if self.proc is None:
            return None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
        total, todo = 0.0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            total += _status_mib(pid, "Pss", "smaps_rollup") or 0.0
            todo += children.get(pid, [])
        return total

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


def _status_mib(pid: int, field: str, file: str = "status") -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


# -- following runs -----------------------------------------------------------------------------------
@dataclass
class Seen:
    """What the follower of one run saw."""

    user: int
    run_id: str = ""
    submitted: float = 0.0
    first: float | None = None
    terminal: float | None = None
    steps: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    duplicates: int = 0
    missing: int = 0
    reconnects: int = 0
    resumed: bool = False
    status: str = ""
    stored: int = 0
    error: str = ""
    phases: tuple[float, float, float] | None = None
    """Seconds, by the server's clock: waiting for a run slot, until run_started (the sandbox session),
    from run_started to the end."""
    started_ts: float | None = None
    why: str = ""
    """What a run that ended without an answer said (its RunError or LimitReached), for the report."""


async def follow(client: AsyncClient, seen: Seen, changed: asyncio.Event | None = None) -> None:
    seen.submitted = time.perf_counter()
    try:
        seen.run_id = (await client.create_run(QUESTION)).id
        stream = client.run_events(seen.run_id)
        async for event in stream:
            seen.first = seen.first or time.perf_counter()
            seen.ids.append(stream.last_id)
            if isinstance(event, StepStarted):
                seen.steps.append(event.ts)
            seen.resumed = seen.resumed or isinstance(event, RunResumed)
            if isinstance(event, RunStarted):
                seen.started_ts = event.ts
            if isinstance(event, RunError | LimitReached):
                seen.why = f"{type(event).__name__} at step {event.steps}: {event.message}"[:300]
            seen.duplicates, seen.missing = stream.duplicates, stream.missing
            seen.reconnects = stream.reconnects
            if changed is not None:
                changed.set()
        seen.terminal = time.perf_counter()
    except ThinkboxError as exc:
        seen.error = str(exc)


async def follow_all(
    clients: list[AsyncClient], seen: list[Seen], timeout: float, changed: asyncio.Event | None = None
) -> None:
    """Follow every run until it ends or ``timeout`` passes; then read each run's status and count."""
    tasks = [asyncio.ensure_future(follow(clients[s.user], s, changed)) for s in seen]
    _, late = await asyncio.wait(tasks, timeout=timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for s in seen:
        with contextlib.suppress(ThinkboxError):
            if s.run_id:
                info = await clients[s.user].get_run(s.run_id)
                s.status, s.stored = info.status, info.events
                if info.started_at and info.finished_at and s.started_ts:
                    s.phases = (info.started_at - info.created_at, s.started_ts - info.started_at,
                                info.finished_at - s.started_ts)  # fmt: skip


def step_intervals(seen: Sequence[Seen]) -> list[float]:
    return [(b - a) * 1000 for s in seen for a, b in zip(s.steps, s.steps[1:], strict=False)]


def gapless(s: Seen) -> bool:
    return s.ids == list(range(1, len(s.ids) + 1)) and s.stored == len(s.ids) and not s.duplicates


def unanswered(s: Seen, round_name: str) -> str:
    """One line on a run that ended without an answer: its status and what it said."""
    return f"{round_name} run {s.run_id}: {s.status}: {s.why or 'no error event'}"


def lost_events(s: Seen) -> int:
    return s.missing + max(0, s.stored - (s.ids[-1] if s.ids else 0))


def ms_between(start: float, end: float | None) -> float | None:
    return None if end is None else (end - start) * 1000
