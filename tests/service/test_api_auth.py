"""Every route of the app, walked: each answers 401 without a key, with a malformed or unknown key, with a key
sent under another scheme and with a revoked key, except the few that are public on purpose; no answer
echoes the key or opens the API to other origins (CORS). A route added without its key check fails here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import secrets
import time

import httpx
import httpx2
import openai
import pytest
from fastapi import routing
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from thinkbox.service import accounts

from .conftest import Running
from .service_support import program, read_sse

PUBLIC = {
    "/healthz",  # liveness, for load balancers
    "/",  # the web page and its files: the page asks for a key
    "/web/{name:path}",
    "/v1/images/{run_id}/{name}",  # capability links: the unguessable name is the key (openai_render)
    "/openapi.json",  # the API's description
    "/docs",  # the interactive docs and the files they load (routes_docs)
    "/docs/assets/{name}",
    "/redoc",
}


def _routes(running: Running) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, included routers' too: FastAPI's own walk,
    the one its OpenAPI schema is made from (a FastAPI before it had one kept included routes flat)."""
    walk = getattr(routing, "iter_route_contexts", iter)
    found = []
    for route in walk(running.server.app.routes):
        methods = getattr(route, "methods", None)
        assert methods, route  # a Mount or a websocket route would hide what it serves from this walk
        found += [(method, route.path) for method in sorted(methods)]
    return found


def test_every_route_but_the_public_ones_needs_a_valid_key(running: Running) -> None:
    routes = _routes(running)
    some = {"/v1/runs", "/v1/files/{path:path}", "/mcp", "/v1/chat/completions"}
    assert {path for _, path in routes} >= some
    assert {path for _, path in routes if path in PUBLIC} == PUBLIC  # the list above is not stale
    _, revoked = accounts.create_key(running.db, "acme", "alice")
    accounts.revoke_key(running.db, revoked)
    unknown = "tbx_" + "A" * 43
    tries = {
        "no key": {},
        "an empty key": {"Authorization": "Bearer"},
        "a malformed key": {"Authorization": "Bearer not-a-key"},
        "an over-long key": {"Authorization": "Bearer tbx_" + "A" * 5000},
        "an unknown key": {"Authorization": f"Bearer {unknown}"},
        "a valid key under another scheme": {"Authorization": f"Basic {running.alice.key}"},
        "a valid key in another header": {"X-Api-Key": running.alice.key},
        "a revoked key": {"Authorization": f"Bearer {revoked}"},
    }
    checked = 0
    with httpx.Client(base_url=running.url, timeout=60) as client:
        for method, template in routes:
            if template in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", "1", template)
            for what, headers in tries.items():
                response = client.request(method, path, headers=headers, params={"key": running.alice.key})
                assert response.status_code == 401, (method, template, what, response.text[:300])
                assert response.headers.get("www-authenticate") == "Bearer", (method, template, what)
                assert running.alice.key not in response.text and revoked not in response.text
                assert unknown not in response.text, (method, template, what)
                checked += 1
    assert checked >= len(tries) * 30


def test_no_route_lets_another_origin_read_its_answers(running: Running) -> None:
    """No CORS headers: a page of another origin cannot read the API's answers (the web page is
    same-origin)."""
    evil = {"Origin": "https://evil.example"}
    with httpx.Client(base_url=running.url, headers=evil, timeout=60) as client:
        preflight = client.options(
            "/v1/runs",
            headers={
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        answers = [
            preflight,
            client.get("/v1/me", headers=running.alice.headers),
            client.get("/healthz"),
            client.get("/"),
        ]
    for response in answers:
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers
    assert answers[1].status_code == 200  # the key works: only the browser's same-origin rule holds it back


def test_a_key_revoked_while_its_event_stream_is_open_gets_no_more_events(running: Running) -> None:
    """The stream checks the key before each event it sends, as a new request would: after the revocation
    nothing more of the run comes (here its end, which waits for a file written after the revocation)."""
    _, key = accounts.create_key(running.db, "acme", "alice")
    gate = f"go-{secrets.token_hex(4)}"
    code = f"import os, time\nwhile not os.path.exists({gate!r}):\n    time.sleep(0.05)"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=running.url, headers=headers, timeout=60) as client:
        run = client.post("/v1/runs", json={"question": program([code], "after-the-gate")}).json()
        seen: list[str] = []
        with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            lines = response.iter_lines()
            for line in lines:
                seen.append(line)
                if gate in line:  # the step that waits for the gate has begun
                    break
            accounts.revoke_key(running.db, key)
            with running.client(running.alice) as alice:  # the same user's other key opens the gate
                assert alice.put(f"/v1/files/{gate}", content=b"").status_code == 201
                rest = list(lines)
                with alice.stream("GET", f"/v1/runs/{run['id']}/events") as replay:
                    events = [e["event"] for e in read_sse(replay)]  # the run did go on and finish
        assert client.get(f"/v1/runs/{run['id']}/events").status_code == 401
    assert gate in "".join(seen) and events[-1] == "run_finished", events
    assert not [line for line in rest if "run_finished" in line or "after-the-gate" in line], rest


def test_a_key_revoked_while_its_chat_completion_streams_gets_no_more_of_it(running: Running) -> None:
    """The OpenAI-compatible stream (through the real SDK) checks its key before each event of the run: after
    the revocation no more of the answer comes, the SDK gets a 401 error and the run is cancelled."""
    _, key = accounts.create_key(running.db, "acme", "alice")
    gate = f"go-{secrets.token_hex(4)}"
    code = f"import os, time\nwhile not os.path.exists({gate!r}):\n    time.sleep(0.05)"
    never = code.replace(gate, gate + "-never")  # the next step waits until the run is cancelled
    ai = openai.OpenAI(base_url=running.url + "/v1", api_key=key, max_retries=0, timeout=60)
    stream = ai.chat.completions.create(
        model="thinkbox",
        messages=[{"role": "user", "content": program([code, never], "after-the-gate")}],
        stream=True,
    )
    text, run_id = "", ""
    for chunk in stream:
        run_id = chunk.id.removeprefix("chatcmpl-")
        delta = chunk.choices[0].delta if chunk.choices else None
        text += (getattr(delta, "reasoning_content", None) or "") + ((delta and delta.content) or "")
        if gate in text:  # the step that waits for the gate has begun
            break
    accounts.revoke_key(running.db, key)
    with running.client(running.alice) as alice:  # the same user's other key opens the gate
        assert alice.put(f"/v1/files/{gate}", content=b"").status_code == 201
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                delta = chunk.choices[0].delta if chunk.choices else None
                text += (getattr(delta, "reasoning_content", None) or "") + ((delta and delta.content) or "")
        with alice.stream("GET", f"/v1/runs/{run_id}/events") as replay:
            events = read_sse(replay)
    assert "invalid or revoked API key" in str(caught.value), caught.value
    assert "after-the-gate" not in text, text
    assert events[-1]["event"] == "run_finished" and events[-1]["data"]["status"] == "cancelled", events[-1]


async def test_a_key_revoked_during_an_mcp_ask_gets_no_answer(running: Running) -> None:
    """``ask`` over ``/mcp`` (the real MCP SDK) checks its key before each event of its run: revoked while the
    run works, the call ends in an error naming the key, without the answer, and the run is cancelled."""
    _, key = accounts.create_key(running.db, "acme", "alice")
    gate = f"go-{secrets.token_hex(4)}"
    code = f"import os, time\nwhile not os.path.exists({gate!r}):\n    time.sleep(0.05)"
    never = code.replace(gate, gate + "-never")  # the next step waits until the run is cancelled
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()  # step 1 has begun: its code waits for the gate

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        Client(streamable_http_client(f"{running.url}/mcp", http_client=http)) as client,
    ):
        question = program([code, never], "after-the-gate")
        call = asyncio.ensure_future(
            client.call_tool("ask", {"question": question}, progress_callback=on_progress)
        )
        await asyncio.wait_for(started.wait(), 60)
        accounts.revoke_key(running.db, key)
        async with httpx.AsyncClient(
            base_url=running.url, headers=running.alice.headers, timeout=60
        ) as alice:
            assert (await alice.put(f"/v1/files/{gate}", content=b"")).status_code == 201
            result = await asyncio.wait_for(call, 60)
            runs = (await alice.get("/v1/runs")).json()["runs"]
            run = next(r for r in runs if r["question"] == question)
            async with alice.stream("GET", f"/v1/runs/{run['id']}/events") as events:  # to its end
                last = [line async for line in events.aiter_lines() if line.startswith("data: ")][-1]
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert result.is_error and "invalid or revoked API key" in text, result.content
    assert "after-the-gate" not in text
    assert '"type":"run_finished"' in last and '"status":"cancelled"' in last, last


def test_a_key_revoked_while_its_chat_completion_is_awaited_gets_a_401(running: Running) -> None:
    """The same without ``stream``: the answer the client waits for is refused (401), the run cancelled."""
    _, key = accounts.create_key(running.db, "acme", "alice")
    gate = f"go-{secrets.token_hex(4)}"
    code = f"import os, time\nwhile not os.path.exists({gate!r}):\n    time.sleep(0.05)"
    question = program([code, code.replace(gate, gate + "-never")], "after-the-gate")
    ai = openai.OpenAI(base_url=running.url + "/v1", api_key=key, max_retries=0, timeout=60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            ai.chat.completions.create, model="thinkbox", messages=[{"role": "user", "content": question}]
        )
        with running.client(running.alice) as alice:
            deadline = time.monotonic() + 60
            while not (
                runs := [r for r in alice.get("/v1/runs").json()["runs"] if r["question"] == question]
            ):
                assert time.monotonic() < deadline and not call.done(), "the run did not start"
                time.sleep(0.05)
            with alice.stream("GET", f"/v1/runs/{runs[0]['id']}/events") as response:
                lines = response.iter_lines()
                for line in lines:
                    if gate in line:  # the step that waits for the gate has begun
                        break
                accounts.revoke_key(running.db, key)
                assert alice.put(f"/v1/files/{gate}", content=b"").status_code == 201
                last = [line for line in lines if line.startswith("data: ")][-1]
        with pytest.raises(openai.AuthenticationError) as caught:
            call.result(60)
    assert "invalid or revoked API key" in str(caught.value)
    assert '"type":"run_finished"' in last and '"status":"cancelled"' in last, last
