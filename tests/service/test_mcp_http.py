"""The MCP server at ``/mcp`` of a running service, through the ``mcp`` SDK's own client (both databases)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from .conftest import Running
from .service_support import Account, program

TOOLS = {"ask", "create_session", "run_code", "close_session", "list_files", "read_file", "write_file"}
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\n'plotted'"


@asynccontextmanager
async def mcp_client(running: Running, who: Account | None, **headers: str) -> AsyncIterator[Client]:
    auth = {"Authorization": f"Bearer {who.key}"} if who is not None else {}
    async with (
        httpx2.AsyncClient(headers={**auth, **headers}, timeout=60) as http,
        Client(streamable_http_client(f"{running.url}/mcp", http_client=http)) as client,
    ):
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    return await client.call_tool(tool, arguments)


async def new_session(client: Client) -> str:
    result = await call(client, "create_session")
    assert not result.is_error, result.content
    session_id: str = result.structured_content["session_id"]
    return session_id


async def test_tools_are_listed_with_schemas_and_annotations(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
        hints = tool.annotations
        assert hints is not None and hints.open_world_hint is False, tool.name
    run_code = tools["run_code"]
    assert run_code.input_schema["required"] == ["session_id", "code"]
    assert run_code.input_schema["properties"]["code"]["maxLength"] == 1_000_000
    assert {"stdout", "stderr", "result", "error"} <= set(run_code.output_schema["properties"])
    assert tools["read_file"].annotations.read_only_hint is True
    assert tools["list_files"].annotations.read_only_hint is True
    assert tools["write_file"].annotations.destructive_hint is True
    assert tools["write_file"].annotations.idempotent_hint is True
    assert tools["close_session"].annotations.destructive_hint is True
    assert tools["create_session"].annotations.read_only_hint is False
    assert tools["ask"].input_schema["required"] == ["question"]


async def test_state_persists_within_a_session_and_not_across_sessions(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        first, second = await new_session(client), await new_session(client)
        assert first != second
        one = await call(client, "run_code", session_id=first, code="x = 20\nprint('set')")
        two = await call(client, "run_code", session_id=first, code="x * 2 + 2")
        other = await call(client, "run_code", session_id=second, code="x")
        for session_id in (first, second):
            closed = await call(client, "close_session", session_id=session_id)
            assert closed.structured_content == {"session_id": session_id, "closed": True}
        again = await call(client, "close_session", session_id=first)
    assert one.structured_content["stdout"] == "set\n"
    assert two.structured_content["result"] == "42" and "Out: 42" in two.content[0].text
    assert not other.is_error  # the code raised: data for the model, not a failed call
    assert other.structured_content["error"]["type"] == "NameError"
    assert "NameError" in other.content[0].text
    assert again.structured_content["closed"] is False


async def test_a_figure_comes_back_as_image_content(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        session_id = await new_session(client)
        result = await call(client, "run_code", session_id=session_id, code=PLOT)
        await call(client, "close_session", session_id=session_id)
    images = [block for block in result.content if block.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
    assert result.structured_content["images"] == 1
    assert result.structured_content["result"] == "'plotted'"


async def test_a_bad_or_foreign_session_id_is_a_tool_error(running: Running) -> None:
    async with mcp_client(running, running.bob) as bob:
        bobs = await new_session(bob)
    async with mcp_client(running, running.alice) as client:
        for session_id in ("s_0123456789abcdef", bobs, "../../etc", "x" * 64):
            result = await call(client, "run_code", session_id=session_id, code="1")
            assert result.is_error, session_id
            assert "no session" in result.content[0].text and "of yours" in result.content[0].text
        closing = await call(client, "close_session", session_id=bobs)
        assert closing.is_error
        still = await new_session(client)  # the server is fine after all that
        assert (await call(client, "run_code", session_id=still, code="1 + 1")).structured_content[
            "result"
        ] == "2"
        await call(client, "close_session", session_id=still)
    async with mcp_client(running, running.bob) as bob:
        kept = await call(bob, "run_code", session_id=bobs, code="'still mine'")
        await call(bob, "close_session", session_id=bobs)
    assert kept.structured_content["result"] == "'still mine'"


async def test_bad_arguments_unknown_tools_and_oversized_code_are_refused(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        session_id = await new_session(client)
        wrong_type = await client.call_tool("run_code", {"session_id": session_id, "code": ["print(1)"]})
        missing = await client.call_tool("run_code", {"session_id": session_id})
        too_long = await call(client, "run_code", session_id=session_id, code="#" * 1_000_001)
        bad_timeout = await call(client, "run_code", session_id=session_id, code="1", timeout=-1)
        unknown = await client.call_tool("rm_rf", {})
        works = await call(client, "run_code", session_id=session_id, code="'ok'")
        await call(client, "close_session", session_id=session_id)
    for result in (wrong_type, missing, too_long, bad_timeout):
        assert result.is_error
    assert "code" in too_long.content[0].text
    assert unknown.is_error and "rm_rf" in unknown.content[0].text
    assert works.structured_content["result"] == "'ok'"


async def test_code_sent_to_a_busy_session_is_refused_not_queued(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        session_id = await new_session(client)
        slow = asyncio.ensure_future(
            call(client, "run_code", session_id=session_id, code="import time\ntime.sleep(2)\n'slow'")
        )
        await asyncio.sleep(0.8)
        busy = await call(client, "run_code", session_id=session_id, code="'quick'")
        done = await slow
        await call(client, "close_session", session_id=session_id)
    assert busy.is_error and "running other code" in busy.content[0].text
    assert done.structured_content["result"] == "'slow'"


async def test_ask_answers_with_a_trace_progress_and_a_session_to_go_on_in(running: Running) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    question = program(["y = 6 * 7\nprint(y)", "print('checked')"], "forty-two")
    async with mcp_client(running, running.alice) as client:
        result = await client.call_tool("ask", {"question": question}, progress_callback=on_progress)
        data = result.structured_content
        follow = await call(client, "run_code", session_id=data["session_id"], code="y + 1")
        await call(client, "close_session", session_id=data["session_id"])
    assert not result.is_error
    assert data["answer"] == "forty-two" and data["status"] == "answered" and data["steps"] == 3
    assert [step["output"] for step in data["trace"][:2]] == ["42\n", "checked\n"]
    assert data["trace"][0]["code"] == "y = 6 * 7\nprint(y)"
    assert result.content[0].text.startswith("forty-two")
    assert follow.structured_content["result"] == "43"  # the run's variables, in its session
    messages = [m for _, _, m in progress]
    assert "step 1: thinking" in messages and "step 1: the code ran" in messages
    assert "step 3: thinking" in messages
    assert all(total == 8.0 for _, total, _ in progress)  # agent.max_steps of the test settings
    async with httpx.AsyncClient(base_url=running.url, headers=running.alice.headers) as http:
        run = (await http.get(f"/v1/runs/{data['run_id']}")).json()
    assert run["status"] == "succeeded" and run["answer"] == "forty-two"  # the same run /v1/runs shows


async def test_files_round_trip_through_the_users_folder(running: Running) -> None:
    async with mcp_client(running, running.carol) as client:
        wrote = await call(client, "write_file", path="mcp/notes.txt", content="a,b\n1,2\n")
        binary = base64.b64encode(b"\x00\xff\x10").decode()
        await call(client, "write_file", path="mcp/blob.bin", content=binary, encoding="base64")
        listed = await call(client, "list_files")
        text = await call(client, "read_file", path="mcp/notes.txt")
        blob = await call(client, "read_file", path="mcp/blob.bin")
        session_id = await new_session(client)
        seen = await call(client, "run_code", session_id=session_id, code="open('mcp/notes.txt').read()")
        await call(client, "run_code", session_id=session_id, code="open('mcp/out.txt', 'w').write('hi')")
        written = await call(client, "read_file", path="mcp/out.txt")
        await call(client, "close_session", session_id=session_id)
        escapes = [
            await call(client, "read_file", path="../alice/secret.txt"),
            await call(client, "write_file", path="/etc/passwd", content="x"),
            await call(client, "read_file", path="mcp/absent.txt"),
            await call(client, "write_file", path="mcp/x.bin", content="not base64!", encoding="base64"),
        ]
    assert wrote.structured_content["size"] == 8
    paths = {entry["path"] for entry in listed.structured_content["files"]}
    assert {"mcp/notes.txt", "mcp/blob.bin"} <= paths
    assert text.structured_content["content"] == "a,b\n1,2\n"
    assert blob.structured_content == {
        "path": "mcp/blob.bin",
        "size": 3,
        "encoding": "base64",
        "content": binary,
    }
    assert seen.structured_content["result"] == "'a,b\\n1,2\\n'"
    assert written.structured_content["content"] == "hi"
    for result in escapes:
        assert result.is_error and result.content[0].text, result
    assert ".." in escapes[0].content[0].text


async def test_mcp_needs_a_valid_key(running: Running) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=running.url) as http:
        missing = await http.post("/mcp", json=body, headers=headers)
        wrong = await http.post(
            "/mcp", json=body, headers={**headers, "Authorization": "Bearer tbx_not_a_key"}
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "key" in response.json()["error"]["message"]
    for who in (None, Account("acme", "alice", "tbx_not_a_key")):  # the SDK shows the server's message
        with pytest.RaisesGroup(
            pytest.RaisesExc(MCPError, match="API key"), allow_unwrapped=True, flatten_subgroups=True
        ):
            async with mcp_client(running, who) as client:
                await client.list_tools()


async def test_foreign_hosts_and_origins_are_refused(running: Running) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {**running.alice.headers, "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=running.url) as http:
        host = await http.post("/mcp", json=body, headers={**headers, "Host": "evil.example:80"})
        origin = await http.post("/mcp", json=body, headers={**headers, "Origin": "http://evil.example"})
        local = await http.post("/mcp", json=body, headers={**headers, "Origin": running.url})
    assert host.status_code == 421
    assert origin.status_code == 403
    assert local.status_code != 403 and local.status_code != 421


async def test_a_client_that_goes_away_during_ask_cancels_its_run(running: Running) -> None:
    started = asyncio.Event()

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        if message == "step 1: thinking":
            started.set()

    question = program(["import time\ntime.sleep(30)"], "never")
    before = {run["id"] for run in await _runs(running)}

    async def ask() -> None:
        async with mcp_client(running, running.bob) as client:
            await client.call_tool("ask", {"question": question}, progress_callback=on_progress)

    task = asyncio.ensure_future(ask())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
        await task
    [mine] = [run for run in await _runs(running) if run["id"] not in before]
    for _ in range(100):
        if mine["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.1)
        [mine] = [run for run in await _runs(running) if run["id"] == mine["id"]]
    assert mine["status"] == "cancelled"
    assert "MCP client" in mine["error"] and "POST" not in mine["error"], mine["error"]  # not "the user did"


async def _runs(running: Running) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=running.url, headers=running.bob.headers) as http:
        runs: list[dict[str, Any]] = (await http.get("/v1/runs", params={"limit": 50})).json()["runs"]
    return runs


async def test_sessions_of_other_languages_and_cells_of_another_language(running: Running) -> None:
    async with mcp_client(running, running.alice) as client:
        made = await call(client, "create_session", language="js")
        js = made.structured_content["session_id"]
        assert made.structured_content["language"] == "js"
        await call(client, "run_code", session_id=js, code="const base = 20;")
        value = await call(client, "run_code", session_id=js, code="base * 2 + 2")
        py = await new_session(client)
        await call(client, "run_code", session_id=py, code="open('lang.txt', 'w').write('6 7')")
        checked = await call(
            client,
            "run_code",
            session_id=py,
            code="require('fs').readFileSync('lang.txt', 'utf8').split(' ').reduce((a, b) => a * b, 1)",
            language="js",
        )
        shell = await call(client, "run_code", session_id=py, code="cat lang.txt | wc -w", language="sh")
        wrong = await call(client, "run_code", session_id=py, code="1", language="cobol")
        for session_id in (js, py):
            await call(client, "close_session", session_id=session_id)
    assert value.structured_content["result"] == "42"
    assert checked.structured_content["result"] == "42"
    assert shell.structured_content["stdout"].strip() == "2"
    assert wrong.is_error
