"""A real thinkbox service on a loopback port for the tests, and a model the tests program by question.

:class:`ThreadServer` runs the app under uvicorn in a thread of the test process (real HTTP, real sandbox
sessions, a real database); :class:`ProcessServer` runs ``thinkbox serve`` as a child process, for tests
that kill it. :class:`QuestionModel` is the scripted model of these tests: a question of the form
``steps: ["code 1", "code 2"] answer: TEXT`` makes it reply with one code step per turn, then the answer,
so any number of concurrent runs each follow their own script (a fake of the LLM, the only fake here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from thinkbox.config import Settings, load_settings
from thinkbox.errors import ConfigError
from thinkbox.models import install
from thinkbox.models.base import ModelEvent, ModelReply, ModelRequest, TextDelta, Usage
from thinkbox.service import accounts
from thinkbox.service.api.app import create_app
from thinkbox.service.db.engine import Database
from thinkbox.service.tools.spec import Function
from thinkbox.service.tools.store import ToolInfo

_PROGRAM = re.compile(r"steps:\s*(\[.*?\])\s*answer:\s*(.*?)\s*(?:\n|$)", re.S)
ROOT = Path(__file__).resolve().parents[2]


def program(steps: list[str], answer: str) -> str:
    """A question that makes :class:`QuestionModel` run ``steps`` (one per turn), then answer."""
    return f"steps: {json.dumps(steps)} answer: {answer}"


class QuestionModel:
    """Replies with the next code step of the program in the run's question, then its answer."""

    name = "question-model"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.systems: dict[str, str] = {}
        """The system prompt of the latest request for each program (as :func:`program` wrote it)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests += 1
        messages = request.messages
        starts = [i for i, m in enumerate(messages) if m["role"] == "user" and _PROGRAM.search(m["content"])]
        if not starts:  # not a program (a fuzzer's question): answer at once
            reply = {"thought": "no program", "action": "provide_answer", "code": "", "final_answer": "?"}
        else:
            match = _PROGRAM.search(messages[starts[-1]]["content"])
            assert match is not None
            if messages[0]["role"] == "system":
                # keyed by the program as program() wrote it: the user message may hold more than it
                self.systems[f"steps: {match.group(1)} answer: {match.group(2)}"] = messages[0]["content"]
            steps, answer = json.loads(match.group(1)), match.group(2)
            done = sum(1 for m in messages[starts[-1] :] if m["role"] == "assistant")
            reply = (
                {
                    "thought": f"step {done + 1}",
                    "action": "execute_code",
                    "code": steps[done],
                    "final_answer": "",
                }
                if done < len(steps)
                else {"thought": "done", "action": "provide_answer", "code": "", "final_answer": answer}
            )
        text = json.dumps(reply)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        for i in range(0, len(text), 40):
            yield TextDelta(text[i : i + 40])
        yield ModelReply(text=text, usage=Usage(100, len(text) // 4), finish_reason="stop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_settings(data_dir: Path, database_url: str | None = None, **service: Any) -> Settings:
    svc = {"database_url": database_url, **service}
    return load_settings(
        data_dir=data_dir,
        cache_dir=data_dir / "cache",
        model={"provider": "scripted", "script": str(data_dir / "unused.json")},
        sandbox={"pool_size": 0, "limits": {"timeout_s": 10.0, "kill_grace_s": 1.0}},
        agent={"max_steps": 8},
        service=svc,
    )


@dataclass
class Account:
    tenant: str
    user: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_account(db: Database, tenant: str, user: str) -> Account:
    names = {t.name for t in accounts.list_tenants(db)}
    if tenant not in names:
        accounts.create_tenant(db, tenant)
    if user not in {u.name for t, u in accounts.list_users(db, tenant)}:
        accounts.create_user(db, tenant, user)
    _, key = accounts.create_key(db, tenant, user)
    return Account(tenant, user, key)


class ThreadServer:
    """The app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings: Settings, model: Any) -> None:
        self.settings = settings
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, model=model)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="thinkbox-test-server", daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    @property
    def service(self) -> Any:
        return self.app.state.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class ProcessServer:
    """``thinkbox serve`` as a child process (to be killed for real)."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> ProcessServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "thinkbox"),
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"thinkbox serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"thinkbox serve did not answer in {timeout} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def directives(policy: str) -> dict[str, str]:
    """A Content-Security-Policy header's directives, by name (``{"script-src": "'self'", ...}``)."""
    parts = (part.strip().partition(" ") for part in policy.split(";") if part.strip())
    return {name: value for name, _, value in parts}


def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    """The events of an SSE response: dicts with id (int), event, data (parsed JSON)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "id":
            current["id"] = int(value)
        elif field == "event":
            current["event"] = value
        elif field == "data":
            current["data"] = json.loads(value)
    return events


@dataclass
class Running:
    """A running server with tenant acme (users alice and bob) and tenant globex (carol)."""

    server: ThreadServer
    db: Database
    data_dir: Path
    alice: Account
    bob: Account
    carol: Account

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, who: Account) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=who.headers, timeout=60)


@contextlib.contextmanager
def running_server(data_dir: Path, database_url: str | None = None, **service: Any) -> Iterator[Running]:
    """A :class:`ThreadServer` with :class:`QuestionModel` and the three accounts of :class:`Running`."""
    server = ThreadServer(service_settings(data_dir, database_url, **service), QuestionModel()).start()
    db = server.service.db
    try:
        yield Running(
            server,
            db,
            data_dir,
            make_account(db, "acme", "alice"),
            make_account(db, "acme", "bob"),
            make_account(db, "globex", "carol"),
        )
    finally:
        server.stop()


def require_embedded_model() -> None:
    """Skip, saying why, unless the llama.cpp runtime and the embedded model are installed."""
    pytest.importorskip("llama_cpp", reason="the llama.cpp runtime is not installed (scripts/setup.sh)")
    try:
        install.locate_model(load_settings())
    except ConfigError as exc:
        pytest.skip(f"the embedded model is not installed: {exc}")


def tool_info(
    name: str, description: str, functions: list[str] | None = None, updated: float = 1.0
) -> ToolInfo:
    """A saved tool's listing as the store gives it (for the prompt's ranking, without a store)."""
    return ToolInfo(
        name=name,
        version=1,
        active_version=1,
        description=description,
        functions=[Function(f, "(x)", "") for f in functions or [name]],
        source="",
        tests="",
        packages=[],
        secrets=[],
        private=False,
        author="alice",
        tests_passed=1,
        created_at=updated,
        updated_at=updated,
    )
