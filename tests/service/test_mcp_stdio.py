"""``thinkbox mcp`` over stdio, started as a subprocess by the ``mcp`` SDK's own client (as an IDE does)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from sqlalchemy import select

from process_support import descendants, pids_with_arg, still_alive
from thinkbox.service.db import Database
from thinkbox.service.db.models import SessionRow

THINKBOX = Path(sys.executable).parent / "thinkbox"
REPLIES = [
    {"thought": "multiply", "action": "execute_code", "code": "z = 6 * 7\nprint(z)", "final_answer": ""},
    {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "z is 42"},
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "script.json").write_text(
        json.dumps({"by_step": True, "replies": [json.dumps(r) for r in REPLIES]})
    )
    return tmp_path / "mcp-data"


def server(data_dir: Path) -> StdioServerParameters:
    script = data_dir.parent / "script.json"
    args = ["mcp", "--data-dir", str(data_dir), "--model", "scripted", "--script", str(script)]
    return StdioServerParameters(command=str(THINKBOX), args=args, env=dict(os.environ))


def session_rows(data_dir: Path) -> list[SessionRow]:
    db = Database.open(f"sqlite:///{data_dir / 'thinkbox.db'}")
    try:
        with db.session() as s:
            return list(s.scalars(select(SessionRow)))
    finally:
        db.dispose()


async def test_stdio_keeps_state_returns_images_and_leaves_nothing_behind(data_dir: Path) -> None:
    async with Client(server(data_dir)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        created = await client.call_tool("create_session", {})
        session_id = created.structured_content["session_id"]
        first = await client.call_tool("run_code", {"session_id": session_id, "code": "n = 5"})
        second = await client.call_tool("run_code", {"session_id": session_id, "code": "n * 3"})
        plot = "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\nplt.show()"
        image = await client.call_tool("run_code", {"session_id": session_id, "code": plot})
        bad = await client.call_tool("run_code", {"session_id": "s_ffffffffffffffff", "code": "1"})
        asked = await client.call_tool("ask", {"question": "What is 6 times 7?"})
        wrote = await client.call_tool("write_file", {"path": "hello.txt", "content": "hi"})
        seen = await client.call_tool(
            "run_code", {"session_id": session_id, "code": "open('hello.txt').read()"}
        )
        [main] = [pid for pid in pids_with_arg(str(data_dir)) if pid != os.getpid()]
        tree = descendants(main)
    assert names == {
        "ask",
        "create_session",
        "run_code",
        "close_session",
        "list_files",
        "read_file",
        "write_file",
    }
    assert not first.is_error and second.structured_content["result"] == "15"
    [png] = [block for block in image.content if block.type == "image"]
    assert base64.b64decode(png.data).startswith(b"\x89PNG")
    assert bad.is_error and "no session" in bad.content[0].text
    assert asked.structured_content["answer"] == "z is 42"
    assert asked.structured_content["trace"][0]["output"] == "42\n"
    assert not wrote.is_error and seen.structured_content["result"] == "'hi'"
    assert len(tree) > 1  # the server and its sandbox processes
    assert await asyncio.to_thread(still_alive, tree, 15) == []
    rows = session_rows(data_dir)
    assert len(rows) == 2  # create_session's and ask's
    assert all(row.closed_at is not None for row in rows)
    assert {row.close_reason for row in rows} == {"the MCP client went away"}


def test_garbage_on_stdin_stops_the_server_with_one_clear_line(data_dir: Path) -> None:
    script = data_dir.parent / "script.json"
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}),
        "this is not json {",
        json.dumps({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}),
    ]
    started = time.monotonic()
    proc = subprocess.run(
        [str(THINKBOX), "mcp", "--data-dir", str(data_dir), "--model", "scripted", "--script", str(script)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 60
    assert proc.returncode == 2
    assert "line 2 from the client is not a JSON-RPC message" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3
    answers = [json.loads(line) for line in proc.stdout.splitlines()]  # the wire holds JSON only
    assert 2 not in [a["id"] for a in answers]  # nothing after the garbage was read


def test_a_bad_user_option_is_refused_with_a_message(data_dir: Path) -> None:
    proc = subprocess.run(
        [str(THINKBOX), "mcp", "--data-dir", str(data_dir), "--user", "nobody"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "--user takes TENANT/USER" in proc.stderr and "Traceback" not in proc.stderr
