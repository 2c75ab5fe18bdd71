"""The scripted model shipped for users' tests: replays, streams, records, and says when it runs out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinkbox.errors import ConfigError, ModelError
from thinkbox.models.base import ModelBackend, ModelReply, ModelRequest, TextDelta, complete
from thinkbox.models.scripted import ScriptedModel

pytestmark = pytest.mark.asyncio(loop_scope="session")
REQUEST = ModelRequest(messages=[{"role": "user", "content": "hi"}])


async def test_replies_stream_in_small_deltas_then_one_reply() -> None:
    model = ScriptedModel([{"action": "provide_answer", "final_answer": "3"}], chunk_chars=5)
    events = [e async for e in model.stream(REQUEST)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(len(d) <= 5 for d in deltas) and len(deltas) > 3
    reply = events[-1]
    assert isinstance(reply, ModelReply)
    assert "".join(deltas) == reply.text and json.loads(reply.text)["final_answer"] == "3"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert isinstance(model, ModelBackend)


async def test_requests_are_recorded_and_running_out_is_a_clear_error() -> None:
    model = ScriptedModel(["one"])
    assert (await complete(model, REQUEST)).text == "one"
    with pytest.raises(ModelError, match="ran out of replies: it was given 1 and was asked for reply 2"):
        await complete(model, REQUEST)
    assert model.requests == [REQUEST, REQUEST]


async def test_a_script_file_may_be_a_json_list_or_json_lines(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["plain text", {"action": "provide_answer", "final_answer": "1"}]))
    lines = tmp_path / "lines.jsonl"
    lines.write_text('"plain text"\n{"action": "provide_answer", "final_answer": "1"}\n')
    for path in (listed, lines):
        model = ScriptedModel.from_file(path)
        assert model.name == f"scripted:{path.name}"
        texts = [(await complete(model, REQUEST)).text for _ in range(2)]
        assert texts[0] == "plain text" and json.loads(texts[1])["final_answer"] == "1"


async def test_a_missing_or_broken_script_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="THINKBOX_MODEL__SCRIPT"):
        ScriptedModel.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[not json")
    with pytest.raises(ConfigError, match="neither a JSON list nor JSON lines"):
        ScriptedModel.from_file(broken)
