"""The OpenAI-compatible API through the real ``openai`` SDK, against a running server (both databases)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from thinkbox.errors import ModelAuthError
from thinkbox.models.base import ModelEvent, ModelRequest, TextDelta

from .conftest import Running
from .service_support import QuestionModel, ThreadServer, make_account, program, service_settings


def client(running: Running, key: str | None = None) -> OpenAI:
    return OpenAI(base_url=running.url + "/v1", api_key=key or running.alice.key, max_retries=0, timeout=60)


def ask(ai: OpenAI, question: str, **kwargs: Any) -> Any:
    messages = kwargs.pop("messages", [{"role": "user", "content": question}])
    return ai.chat.completions.create(model="thinkbox", messages=messages, **kwargs)


def test_models_lists_thinkbox_and_the_backend(running: Running) -> None:
    models = client(running).models.list()
    ids = [m.id for m in models.data]
    assert ids == ["thinkbox", "thinkbox:question-model"]
    assert all(m.object == "model" and m.owned_by == "thinkbox" and m.created > 0 for m in models.data)
    assert client(running).models.retrieve("thinkbox:question-model").id == "thinkbox:question-model"
    with pytest.raises(openai.NotFoundError) as caught:
        client(running).models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found" and "thinkbox" in caught.value.message


def test_a_completion_answers_with_reasoning_and_usage(running: Running) -> None:
    reply = ask(client(running), program(["print(6 * 7)"], "it is 42"), temperature=0.2, max_tokens=50)
    choice = reply.choices[0]
    assert choice.message.content == "it is 42"
    assert choice.finish_reason == "stop"
    reasoning = choice.message.reasoning_content
    assert "step 1" in reasoning and "```python\nprint(6 * 7)\n```" in reasoning and "42" in reasoning
    assert reply.object == "chat.completion" and reply.model == "thinkbox"
    usage = reply.usage
    assert usage is not None and usage.total_tokens > 0
    assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
    assert usage.completion_tokens > 0


def test_streaming_sends_reasoning_before_the_answer_then_usage(running: Running) -> None:
    question = program(["print('hello ' * 2)"], "said hello")
    chunks = list(ask(client(running), question, stream=True, stream_options={"include_usage": True}))
    kinds = []
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            kinds.append("reasoning")
        if delta.content:
            kinds.append("content")
    assert "reasoning" in kinds and "content" in kinds
    assert kinds.index("reasoning") < kinds.index("content")
    assert max(i for i, k in enumerate(kinds) if k == "reasoning") < kinds.index("content")
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
    assert "hello hello" in reasoning and "```python" in reasoning
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "said hello"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.total_tokens > 0
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)


def test_a_follow_up_with_the_same_user_sees_earlier_variables(running: Running) -> None:
    ai, user = client(running), f"conv-{uuid.uuid4().hex[:8]}"
    first = ask(ai, program(["secret = 41"], "stored"), user=user)
    assert first.choices[0].message.content == "stored"
    second = ask(ai, program(["print(secret + 1)"], "done"), user=user)
    assert "42" in second.choices[0].message.reasoning_content
    other = ask(ai, program(["print(secret + 1)"], "done"), user=user + "-other")
    told = other.choices[0].message.reasoning_content  # the lint check's, or the sandbox's without pyflakes
    assert "undefined name 'secret'" in told or "NameError" in told


def test_a_follow_up_without_a_key_is_found_by_its_earlier_messages(running: Running) -> None:
    ai = client(running)
    q1 = program([f"token = '{uuid.uuid4().hex[:6]}'"], "kept")
    first = ask(ai, q1)
    q2 = program(["print(token.upper())"], "shown")
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": q1},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": q2},
    ]
    second = ask(ai, q2, messages=messages)
    assert "NameError" not in second.choices[0].message.reasoning_content
    assert "undefined name" not in second.choices[0].message.reasoning_content
    assert second.choices[0].message.content == "shown"


def test_the_conversation_header_keys_a_session(running: Running) -> None:
    conversation = {"X-Thinkbox-Conversation": uuid.uuid4().hex}
    ai = client(running)
    ask(ai, program(["n = 5"], "ok"), extra_headers=conversation)
    reply = ask(ai, program(["print(n * 3)"], "ok"), extra_headers=conversation)
    assert "15" in reply.choices[0].message.reasoning_content


def test_another_users_or_tenants_conversation_key_reaches_a_session_of_their_own(running: Running) -> None:
    key = uuid.uuid4().hex
    for keyed in ({"user": key}, {"extra_headers": {"X-Thinkbox-Conversation": key}}):
        ask(client(running), program(["secret = 41"], "set"), **keyed)
        for who in (running.bob, running.carol):
            other = ask(client(running, who.key), program(["print(secret + 1)"], "got"), **keyed)
            reasoning = other.choices[0].message.reasoning_content
            assert "42" not in reasoning and ("undefined name" in reasoning or "NameError" in reasoning), who
        mine = ask(client(running), program(["print(secret + 1)"], "got"), **keyed)
        assert "42" in mine.choices[0].message.reasoning_content


def test_a_conversation_id_that_is_not_a_short_string_is_refused(running: Running) -> None:
    conversation = uuid.uuid4().hex
    ask(client(running), program(["k = 2"], "ok"), metadata={"conversation_id": conversation})
    reply = ask(client(running), program(["print(k * 21)"], "ok"), metadata={"conversation_id": conversation})
    assert "42" in reply.choices[0].message.reasoning_content
    for bad in (7, "", "c" * 257):  # not ignored (a new conversation each time), not cut (ids would collide)
        error = _refused(client(running), extra_body={"metadata": {"conversation_id": bad}})
        assert error.param == "metadata.conversation_id" and "string of 1 to 256" in error.message


def test_a_display_image_comes_back_as_a_markdown_link(running: Running) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
    reply = ask(client(running), program([code], "plotted"))
    content = reply.choices[0].message.content
    assert content.startswith("plotted\n\n![figure 1](http://")
    url = content.split("](", 1)[1].rstrip(")")
    image = httpx.get(url, timeout=30)  # no key: a chat app's browser fetches it
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    forged = url.rsplit("/", 1)[0] + "/1-" + "0" * 32 + ".png"
    assert httpx.get(forged, timeout=30).status_code == 404
    listed = running.client(running.alice).get("/v1/files").json()["files"]
    assert any(f["path"].startswith(".thinkbox/images/") for f in listed)


def test_a_wrong_key_is_401_in_openai_shape(running: Running) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(client(running, key="tbx_not-a-key"), "hi")
    assert caught.value.status_code == 401
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["code"] == "invalid_api_key" and "API key" in body["message"]
    raw = httpx.get(running.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert raw.status_code == 401 and set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_no_user_message_is_400(running: Running) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client(running), "", messages=[{"role": "system", "content": "be brief"}])
    assert caught.value.code == "no_user_message"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client(running), "what\x00now")
    assert caught.value.code == "bad_question"
    with pytest.raises(openai.BadRequestError):  # not a message at all
        ask(client(running), "", messages=[{"role": "wizard", "content": "hi"}])


def test_an_unknown_model_is_404(running: Running) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(running).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def _refused(ai: OpenAI, **kwargs: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(ai, program([], "never"), **kwargs)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error", body
    return caught.value


def test_what_the_agent_cannot_do_is_refused_naming_the_field_and_no_run_starts(running: Running) -> None:
    ai, http = client(running), running.client(running.alice)
    runs = len(http.get("/v1/runs", params={"limit": 200}).json()["runs"])
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2}, "n"),
        ({"tools": [tool]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"stop": ["\n"]}, "stop"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
        ({"stream": True, "n": 3}, "n"),
    ]
    for kwargs, param in cases:
        error = _refused(ai, **kwargs)
        assert error.code == "unsupported_parameter" and error.param == param, (kwargs, error.body)
        assert f"leave {param} out" in error.message, error.message
    for kwargs, param in [({"max_tokens": 0}, "max_tokens"), ({"temperature": 5}, "temperature")]:
        error = _refused(ai, **kwargs)
        assert error.param == param and param in error.message, error.body
    assert len(http.get("/v1/runs", params={"limit": 200}).json()["runs"]) == runs
    fine = ask(ai, program([], "fine"), n=1, tool_choice="none", response_format={"type": "text"}, top_p=1)
    assert fine.choices[0].message.content == "fine"


def test_the_last_message_must_be_the_users_text(running: Running) -> None:
    ai, question = client(running), program([], "never")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    cases: list[tuple[list[Any], str, str]] = [
        (
            [{"role": "user", "content": question}, {"role": "assistant", "content": "x"}],
            "messages[1].role",
            "last",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": question}, image]}],
            "messages[0].content",
            "image_url",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": question}, {"type": "video"}]}],
            "messages[0].content[1].type",
            "'text'",
        ),
        ([{"role": "user", "content": 42}], "messages[0].content", "string"),
    ]
    for messages, param, said in cases:
        error = _refused(ai, messages=messages)
        assert error.param == param and said in error.message, error.body
        assert "valid string" not in error.message or param == "messages[0].content", error.message
    lone = '{"role": "user", "content": "a \\udc00 b"}'  # valid JSON, not Unicode: no database keeps it
    headers = {**running.alice.headers, "Content-Type": "application/json"}
    for messages in (
        f"[{lone}]",
        f'[{lone}, {{"role": "assistant", "content": "?"}}, {{"role": "user", "content": "hi"}}]',
    ):
        body = '{"model": "thinkbox", "messages": ' + messages + "}"
        response = httpx.post(running.url + "/v1/chat/completions", content=body, headers=headers, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "messages[0].content" and "lone surrogate" in error["message"], error
    long = _refused(ai, messages=[{"role": "user", "content": "x" * 60_000}])
    assert long.param == "messages" and "60,000" in long.message and "--file" not in long.message


def test_the_sdk_does_not_retry_a_refused_request(running: Running) -> None:
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]}, timeout=60)
    ai = OpenAI(base_url=running.url + "/v1", api_key=running.alice.key, max_retries=2, http_client=http)
    for kwargs in ({"model": "gpt-4o"}, {"n": 2}, {"messages": []}):
        sent.clear()
        with pytest.raises(openai.APIStatusError) as caught:
            ai.chat.completions.create(
                **{"model": "thinkbox", "messages": [{"role": "user", "content": "hi"}], **kwargs}
            )
        assert 400 <= caught.value.status_code < 500 and len(sent) == 1, (kwargs, caught.value.status_code)


def test_other_routes_keep_the_thinkbox_error_shape(running: Running) -> None:
    response = httpx.get(running.url + "/v1/runs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and set(response.json()["error"]) == {"code", "message"}


def test_a_limit_ends_with_finish_reason_length(running: Running) -> None:
    steps = [f"x{i} = {i}" for i in range(12)]  # more than agent.max_steps (8)
    reply = ask(client(running), program(steps, "never"))
    assert reply.choices[0].finish_reason == "length"
    assert "agent.max_steps" in reply.choices[0].message.content


def test_a_busy_conversation_is_409_and_a_client_that_leaves_cancels_its_run(running: Running) -> None:
    user = f"conv-{uuid.uuid4().hex[:8]}"
    body = {
        "model": "thinkbox",
        "stream": True,
        "user": user,
        "messages": [{"role": "user", "content": program(["import time; time.sleep(8)"], "slept")}],
    }
    with httpx.Client(base_url=running.url, headers=running.alice.headers, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            run_id = first["id"].removeprefix("chatcmpl-")
            for line in lines:  # until its code runs
                if "time.sleep" in line:
                    break
            with pytest.raises(openai.ConflictError) as caught:
                ask(client(running), program(["print(1)"], "one"), user=user)
            assert caught.value.code == "session_busy"
        deadline = time.monotonic() + 20
        while http.get(f"/v1/runs/{run_id}").json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the run was not cancelled"
            time.sleep(0.1)
        assert "chat client went away" in http.get(f"/v1/runs/{run_id}").json()["error"]


def test_a_client_that_times_out_waiting_cancels_its_run(running: Running) -> None:
    question = program([f"import time; time.sleep(30)  # {uuid.uuid4().hex}"], "too late")
    impatient = OpenAI(base_url=running.url + "/v1", api_key=running.alice.key, max_retries=0, timeout=2)
    with pytest.raises(openai.APITimeoutError):
        ask(impatient, question)
    with running.client(running.alice) as http:
        [run] = http.get("/v1/runs", params={"q": question}).json()["runs"]
        deadline = time.monotonic() + 20
        while (run := http.get(f"/v1/runs/{run['id']}").json())["status"] != "cancelled":
            assert time.monotonic() < deadline, f"the run was left {run['status']}"
            time.sleep(0.1)
    assert "chat client went away" in run["error"]


def test_a_conversation_without_its_session_gets_the_earlier_messages_as_context(running: Running) -> None:
    question = program(["print('hi')"], "hello Ada")
    messages = [
        {"role": "user", "content": "My name is Ada Lovelace."},
        {"role": "assistant", "content": "Nice to meet you."},
        {"role": "user", "content": [{"type": "text", "text": question}]},
    ]
    reply = ask(client(running), question, messages=messages)
    assert reply.choices[0].message.content == "hello Ada"
    run = running.client(running.alice).get(f"/v1/runs/{reply.id.removeprefix('chatcmpl-')}").json()
    live = running.server.service.sessions.live(run["session_id"])
    texts = [m["content"] for m in live.history]
    assert any("Ada Lovelace" in t for t in texts) and any("Nice to meet you." in t for t in texts)


def test_past_the_run_limit_is_429_in_openai_shape(running: Running) -> None:
    who = make_account(running.db, f"t{uuid.uuid4().hex[:6]}", "eve")  # runs_per_user is 6 here
    body = {
        "model": "thinkbox",
        "stream": True,
        "messages": [{"role": "user", "content": program(["import time; time.sleep(6)"], "slept")}],
    }
    run_ids, readers = [], []  # a reader let go closes its stream
    with httpx.Client(base_url=running.url, headers=who.headers, timeout=60) as http:
        with contextlib.ExitStack() as streams:
            for _ in range(6):
                response = streams.enter_context(http.stream("POST", "/v1/chat/completions", json=body))
                assert response.status_code == 200
                readers.append(response.iter_lines())
                first = next(line for line in readers[-1] if line.startswith("data: "))
                run_ids.append(json.loads(first[6:])["id"].removeprefix("chatcmpl-"))
            with pytest.raises(openai.RateLimitError) as caught:
                ask(client(running, key=who.key), program(["print(1)"], "one"))
            assert caught.value.code == "too_many_runs"
            assert caught.value.response.headers["retry-after"]
            assert isinstance(caught.value.body, dict) and set(caught.value.body) == {
                "message",
                "type",
                "param",
                "code",
            }
        deadline = time.monotonic() + 30  # the streams are closed: their runs are cancelled
        while any(http.get(f"/v1/runs/{r}").json()["status"] != "cancelled" for r in run_ids):
            assert time.monotonic() < deadline, "the runs were not cancelled"
            time.sleep(0.1)


class SlowReplies(QuestionModel):
    """The question model, writing each reply over about a second (as a real model streams)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        async for event in super().stream(request):
            if isinstance(event, TextDelta):
                await asyncio.sleep(0.25)
            yield event


def test_reasoning_streams_while_the_model_still_writes(tmp_path: Path) -> None:
    server = ThreadServer(service_settings(tmp_path), SlowReplies()).start()
    try:
        who = make_account(server.service.db, "acme", "alice")
        ai = OpenAI(base_url=server.url + "/v1", api_key=who.key, max_retries=0, timeout=60)
        seen: dict[str, float] = {}
        for chunk in ask(ai, program(["print(1)"], "one"), stream=True):
            reasoning = getattr(chunk.choices[0].delta, "reasoning_content", None) if chunk.choices else None
            if reasoning:
                seen.setdefault("thought", time.monotonic())
                if "```python" in reasoning:
                    seen.setdefault("code", time.monotonic())
        assert seen["code"] - seen["thought"] > 0.3, seen  # the thought came before the reply was whole
    finally:
        server.stop()


class KeyRefused:
    """A model whose endpoint refuses the service's key: every run fails, and running it again cannot help."""

    name = "key-refused"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        raise ModelAuthError("the model endpoint refused its key: set model.api_key")
        yield TextDelta("")  # pragma: no cover - makes this an async generator


def test_a_failed_run_is_a_500_the_sdk_does_not_retry(tmp_path: Path) -> None:
    server = ThreadServer(service_settings(tmp_path), KeyRefused()).start()
    try:
        who = make_account(server.service.db, "acme", "alice")
        sent: list[httpx.Request] = []
        http = httpx.Client(event_hooks={"request": [sent.append]}, timeout=60)
        ai = OpenAI(base_url=server.url + "/v1", api_key=who.key, max_retries=2, http_client=http)
        with pytest.raises(openai.InternalServerError) as caught:
            ask(ai, "hi")
        assert caught.value.code == "model_auth" and "set model.api_key" in caught.value.message
        assert len(sent) == 1  # one run, not three
    finally:
        server.stop()
