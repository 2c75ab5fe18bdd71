"""``RetryingModel`` and ``RecordingModel`` around real inner models (scripted, and a failing one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chat_server import ChatServer

from thinkbox.errors import ModelAuthError, ModelError, ModelUnavailable
from thinkbox.models.base import ModelEvent, ModelReply, ModelRequest, TextDelta, complete
from thinkbox.models.openai_compat import OpenAICompatModel
from thinkbox.models.recording import RecordingModel, read_recording, scripted_replies
from thinkbox.models.retrying import RetryingModel
from thinkbox.models.scripted import ScriptedModel


def ask(text: str = "hi") -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": text}])


class FlakyModel:
    """Fails with ``errors`` in turn (before or after streaming some text), then answers."""

    def __init__(self, errors: list[ModelError], *, stream_first: bool = False) -> None:
        self.name = "flaky"
        self.errors = errors
        self.stream_first = stream_first
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.calls += 1
        if self.errors:
            if self.stream_first:
                yield TextDelta("partial")
            raise self.errors.pop(0)
        yield TextDelta("ok")
        yield ModelReply(text="ok")


async def no_sleep(seconds: float) -> None:
    pass


async def test_retryable_error_is_retried_with_growing_delays() -> None:
    inner = FlakyModel([ModelUnavailable("busy"), ModelUnavailable("busy")])
    waits: list[tuple[int, float]] = []
    model = RetryingModel(
        inner, max_retries=3, base_delay=1.0, sleep=no_sleep, on_retry=lambda e, n, d: waits.append((n, d))
    )

    reply = await complete(model, ask())

    assert reply.text == "ok"
    assert inner.calls == 3
    assert model.retries == 2
    assert [n for n, _ in waits] == [1, 2]
    assert 0.5 <= waits[0][1] <= 1.0
    assert 1.0 <= waits[1][1] <= 2.0


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    inner = FlakyModel([ModelUnavailable(f"busy {i}") for i in range(5)])
    model = RetryingModel(inner, max_retries=2, sleep=no_sleep)

    with pytest.raises(ModelUnavailable, match="busy 2"):
        await complete(model, ask())

    assert inner.calls == 3


async def test_non_retryable_error_is_raised_at_once() -> None:
    inner = FlakyModel([ModelAuthError("bad key")])
    model = RetryingModel(inner, max_retries=3, sleep=no_sleep)

    with pytest.raises(ModelAuthError):
        await complete(model, ask())

    assert inner.calls == 1


async def test_failure_after_text_was_streamed_is_not_retried() -> None:
    inner = FlakyModel([ModelUnavailable("dropped")], stream_first=True)
    model = RetryingModel(inner, max_retries=3, sleep=no_sleep)
    seen: list[ModelEvent] = []

    with pytest.raises(ModelUnavailable):
        async for event in model.stream(ask()):
            seen.append(event)

    assert seen == [TextDelta("partial")]
    assert inner.calls == 1


def test_delay_is_capped() -> None:
    model = RetryingModel(FlakyModel([]), base_delay=1.0, max_delay=4.0)

    assert all(2.0 <= model.delay(10) <= 4.0 for _ in range(50))


async def test_recording_appends_request_and_reply_per_call(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "calls.jsonl"
    model = RecordingModel(ScriptedModel(["first", {"answer": 2}]), path)

    await complete(model, ask("one"))
    await complete(model, ask("two"))

    records = read_recording(path)
    assert [r["request"]["messages"][0]["content"] for r in records] == ["one", "two"]
    assert [r["reply"]["text"] for r in records] == ["first", '{"answer": 2}']
    assert records[0]["model"] == "scripted"
    assert "usage" in records[0]["reply"]


async def test_recording_turns_into_a_scripted_model_that_replays_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    recorded = RecordingModel(ScriptedModel(["a", "b"]), path)
    await complete(recorded, ask())
    await complete(recorded, ask())

    replay = ScriptedModel(scripted_replies(path))

    assert [(await complete(replay, ask())).text for _ in range(2)] == ["a", "b"]


async def test_recording_keeps_errors(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    model = RecordingModel(ScriptedModel([]), path)

    with pytest.raises(ModelError):
        await complete(model, ask())

    (record,) = read_recording(path)
    assert record["error"]["code"] == "model_error"
    assert "ran out of replies" in record["error"]["message"]


async def test_recording_a_real_endpoint(tmp_path: Path, chat_server: ChatServer) -> None:
    path = tmp_path / "calls.jsonl"
    model = RecordingModel(OpenAICompatModel(base_url=chat_server.base_url, model="test-model"), path)

    await complete(model, ask("hello"))

    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["reply"]["text"] == "Hello, world"
    assert record["reply"]["usage"]["prompt_tokens"] == 5
