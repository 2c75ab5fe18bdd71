"""The OpenAI-compatible backend, through the real ``openai`` SDK, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest
from chat_server import ChatServer, closed_port

from thinkbox.errors import (
    ContextOverflow,
    ModelAuthError,
    ModelError,
    ModelNotFound,
    ModelTimeout,
    ModelUnavailable,
)
from thinkbox.models.base import ModelReply, ModelRequest, TextDelta, complete
from thinkbox.models.openai_compat import OpenAICompatModel
from thinkbox.models.retrying import RetryingModel

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def ask(text: str = "hi", schema: dict[str, object] | None = None) -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": text}], json_schema=schema)


def model_for(server: ChatServer, **options: object) -> OpenAICompatModel:
    return OpenAICompatModel(base_url=server.base_url, model="test-model", **options)  # type: ignore[arg-type]


async def test_streamed_deltas_arrive_in_order_then_one_reply_with_usage(chat_server: ChatServer) -> None:
    events = [e async for e in model_for(chat_server).stream(ask("hello"))]

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo", ", ", "world"]
    assert isinstance(events[-1], ModelReply)
    assert sum(isinstance(e, ModelReply) for e in events) == 1
    reply = events[-1]
    assert reply.text == "Hello, world"
    assert reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens == len("hello")
    assert reply.usage.completion_tokens == 4
    sent = chat_server.state.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hello"}]


async def test_a_seed_and_temperature_are_sent_and_no_seed_when_none_is_set(chat_server: ChatServer) -> None:
    model = model_for(chat_server)
    await complete(model, ModelRequest(messages=[{"role": "user", "content": "hi"}], temperature=1.0, seed=2))
    await complete(model, ask())

    seeded, plain = chat_server.state.requests
    assert (seeded["temperature"], seeded["seed"]) == (1.0, 2)
    assert plain["temperature"] == 0.0 and "seed" not in plain


async def test_json_schema_is_sent_as_response_format_and_reply_marked_constrained(
    chat_server: ChatServer,
) -> None:
    reply = await complete(model_for(chat_server), ask(schema=SCHEMA))

    fmt = chat_server.state.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == SCHEMA
    assert fmt["json_schema"]["strict"] is True
    assert reply.constrained is True


def sent_formats(server: ChatServer) -> list[str | None]:
    """The response_format of each request: its type, with ``/loose`` for a non-strict json_schema."""
    kinds: list[str | None] = []
    for body in server.state.requests:
        fmt = body.get("response_format") or {}
        loose = fmt.get("type") == "json_schema" and not fmt["json_schema"]["strict"]
        kinds.append(f"{fmt['type']}/loose" if loose else fmt.get("type"))
    return kinds


async def test_strict_schema_refused_falls_back_to_the_same_schema_not_strict(
    chat_server: ChatServer,
) -> None:
    chat_server.state.refuse = {"strict"}
    model = model_for(chat_server)

    reply = await complete(model, ask(schema=SCHEMA))
    await complete(model, ask(schema=SCHEMA))

    assert sent_formats(chat_server) == ["json_schema", "json_schema/loose", "json_schema/loose"]
    assert chat_server.state.requests[-1]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert reply.constrained is False


async def test_rejected_json_schema_falls_back_to_json_object_and_remembers(chat_server: ChatServer) -> None:
    chat_server.state.refuse = {"json_schema"}
    model = model_for(chat_server)

    first = await complete(model, ask(schema=SCHEMA))
    second = await complete(model, ask(schema=SCHEMA))

    assert sent_formats(chat_server) == ["json_schema", "json_schema/loose", "json_object", "json_object"]
    assert first.text == second.text == "Hello, world"
    assert first.constrained is False
    assert model.format_level == "json_object"


async def test_server_without_any_response_format_falls_back_to_none(chat_server: ChatServer) -> None:
    chat_server.state.refuse = {"json_schema", "json_object"}
    chat_server.state.vague_400 = True

    reply = await complete(model_for(chat_server), ask(schema=SCHEMA))

    assert sent_formats(chat_server) == ["json_schema", "json_schema/loose", "json_object", None]
    assert reply.text == "Hello, world"
    assert chat_server.state.requests[-1]["stream_options"] == {"include_usage": True}


async def test_server_refusing_stream_options_still_answers_without_usage(chat_server: ChatServer) -> None:
    chat_server.state.refuse = {"stream_options"}
    model = model_for(chat_server)

    reply = await complete(model, ask(schema=SCHEMA))
    await complete(model, ask())

    assert reply.text == "Hello, world"
    assert reply.usage.total == 0
    assert reply.constrained is True
    assert [("stream_options" in r) for r in chat_server.state.requests] == [True, False, False]


async def test_a_400_that_nothing_fixes_is_a_model_error_with_the_server_message(
    chat_server: ChatServer,
) -> None:
    chat_server.state.faults = [400, 400, 400]

    with pytest.raises(ModelError) as info:
        await complete(model_for(chat_server), ask())

    assert "injected fault 400" in str(info.value)
    assert info.value.retryable is False


async def test_a_prompt_longer_than_the_servers_context_is_a_context_overflow(
    chat_server: ChatServer,
) -> None:
    chat_server.state.context_chars = 100

    with pytest.raises(ContextOverflow) as info:
        await complete(model_for(chat_server), ask("x" * 200))

    assert "maximum context length is 100" in str(info.value)
    assert info.value.retryable is False
    assert len(chat_server.state.requests) == 1  # not retried without its options: nothing would fit


async def test_wrong_key_is_auth_error_naming_the_key_setting(chat_server: ChatServer) -> None:
    chat_server.state.api_key = "right-key"

    with pytest.raises(ModelAuthError) as info:
        await complete(model_for(chat_server, api_key="wrong-key"), ask())

    assert "THINKBOX_MODEL__API_KEY" in str(info.value)
    assert "wrong-key" not in str(info.value)
    assert info.value.retryable is False


async def test_forbidden_is_auth_error_too(chat_server: ChatServer) -> None:
    chat_server.state.faults = [403]

    with pytest.raises(ModelAuthError, match="THINKBOX_MODEL__API_KEY"):
        await complete(model_for(chat_server), ask())


async def test_right_key_is_sent_as_bearer_token(chat_server: ChatServer) -> None:
    chat_server.state.api_key = "right-key"

    reply = await complete(model_for(chat_server, api_key="right-key"), ask())

    assert reply.text == "Hello, world"


async def test_unknown_model_is_not_found_naming_the_setting_and_the_served_models(
    chat_server: ChatServer,
) -> None:
    model = OpenAICompatModel(base_url=chat_server.base_url, model="no-such-model")

    with pytest.raises(ModelNotFound) as info:
        await complete(model, ask())

    message = str(info.value)
    assert "THINKBOX_MODEL__NAME" in message
    assert "'no-such-model'" in message
    assert "other-model, test-model" in message
    assert chat_server.state.models_calls == 1


async def test_base_url_missing_v1_is_not_found_pointing_at_the_base_url(chat_server: ChatServer) -> None:
    root = chat_server.base_url.removesuffix("/v1")

    with pytest.raises(ModelNotFound) as info:
        await complete(OpenAICompatModel(base_url=root, model="test-model"), ask())

    assert "THINKBOX_MODEL__BASE_URL" in str(info.value)
    assert "/v1" in str(info.value)


async def test_connection_refused_is_unavailable_naming_the_base_url_and_not_retried() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"

    with pytest.raises(ModelUnavailable) as info:
        await complete(OpenAICompatModel(base_url=url, model="m", timeout_s=5), ask())

    assert "THINKBOX_MODEL__BASE_URL" in str(info.value)
    assert url in str(info.value)
    assert info.value.retryable is False


async def test_server_slower_than_the_timeout_is_model_timeout_naming_the_setting(
    chat_server: ChatServer,
) -> None:
    chat_server.state.delay_s = 2.0
    started = time.monotonic()

    with pytest.raises(ModelTimeout) as info:
        await complete(model_for(chat_server, timeout_s=0.3), ask())

    assert time.monotonic() - started < 1.5
    assert "THINKBOX_MODEL__TIMEOUT_S" in str(info.value)
    assert info.value.retryable is True


async def test_stream_that_stalls_between_chunks_times_out(chat_server: ChatServer) -> None:
    chat_server.state.chunk_delay_s = 0.5

    with pytest.raises(ModelTimeout):
        await complete(model_for(chat_server, timeout_s=0.3), ask())


async def test_reply_that_keeps_dribbling_past_the_timeout_is_cut(chat_server: ChatServer) -> None:
    chat_server.state.chunk_delay_s = 0.15
    chat_server.state.reply = ["a"] * 20
    deltas: list[str] = []
    started = time.monotonic()

    with pytest.raises(ModelTimeout, match="still writing"):
        async for event in model_for(chat_server, timeout_s=0.5).stream(ask()):
            if isinstance(event, TextDelta):
                deltas.append(event.text)

    assert 0 < len(deltas) < 20
    assert time.monotonic() - started < 1.5


async def test_connection_dropped_mid_stream_is_retryable_unavailable(chat_server: ChatServer) -> None:
    chat_server.state.drop_after = 2
    deltas: list[str] = []

    with pytest.raises(ModelUnavailable) as info:
        async for event in model_for(chat_server).stream(ask()):
            if isinstance(event, TextDelta):
                deltas.append(event.text)

    assert deltas == ["Hel", "lo"]
    assert info.value.retryable is True
    assert "THINKBOX_MODEL__BASE_URL" in str(info.value)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limit_and_server_errors_are_retryable_unavailable(
    chat_server: ChatServer, status: int
) -> None:
    chat_server.state.faults = [status]

    with pytest.raises(ModelUnavailable) as info:
        await complete(model_for(chat_server), ask())

    assert info.value.retryable is True
    assert str(status) in str(info.value)


async def test_429_then_success_is_retried_by_retrying_model(chat_server: ChatServer) -> None:
    chat_server.state.faults = [429, 503]
    model = RetryingModel(model_for(chat_server), max_retries=3, base_delay=0.01)

    events = [e async for e in model.stream(ask())]

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, world"
    assert isinstance(events[-1], ModelReply)
    assert model.retries == 2
    assert len(chat_server.state.requests) == 3


async def test_a_timed_out_try_is_retried_and_the_next_answers(chat_server: ChatServer) -> None:
    chat_server.state.delays = [1.0]
    model = RetryingModel(model_for(chat_server, timeout_s=0.3), max_retries=2, base_delay=0.01)

    reply = await complete(model, ask())

    assert reply.text == "Hello, world"
    assert model.retries == 1


async def test_sdk_does_not_retry_on_its_own(chat_server: ChatServer) -> None:
    chat_server.state.faults = [503]

    with pytest.raises(ModelUnavailable):
        await complete(model_for(chat_server), ask())

    assert len(chat_server.state.requests) == 1
