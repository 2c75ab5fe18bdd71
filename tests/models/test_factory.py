"""``get_model``: the provider the settings name, built through the provider registry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chat_server import ChatServer, closed_port

from thinkbox.config import load_settings
from thinkbox.errors import ConfigError
from thinkbox.models import factory
from thinkbox.models.base import ModelRequest, complete
from thinkbox.models.openai_compat import OpenAICompatModel
from thinkbox.models.recording import scripted_replies
from thinkbox.models.retrying import RetryingModel


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("THINKBOX_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    monkeypatch.setenv("THINKBOX_CONFIG", str(tmp_path / "absent.toml"))


def ask() -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": "hi"}])


async def test_base_url_selects_openai_wrapped_in_retrying(chat_server: ChatServer) -> None:
    settings = load_settings(model={"base_url": chat_server.base_url, "name": "test-model", "max_retries": 2})

    model = factory.get_model(settings)

    assert isinstance(model, RetryingModel)
    assert isinstance(model.inner, OpenAICompatModel)
    assert model.max_retries == 2
    assert model.name == "openai:test-model"
    assert (await complete(model, ask())).text == "Hello, world"


async def test_openai_api_key_comes_from_settings_then_environment(
    chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_server.state.api_key = "env-key"
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    settings = load_settings(model={"base_url": chat_server.base_url, "name": "test-model"})
    assert (await complete(factory.get_model(settings), ask())).text == "Hello, world"

    chat_server.state.api_key = "settings-key"
    settings = load_settings(
        model={"base_url": chat_server.base_url, "name": "test-model", "api_key": "settings-key"}
    )
    assert (await complete(factory.get_model(settings), ask())).text == "Hello, world"


async def test_scripted_provider_replays_the_script_file(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"action": "provide_answer", "final_answer": "42"}, "second"]))
    settings = load_settings(model={"provider": "scripted", "script": str(script)})

    model = factory.get_model(settings)

    assert json.loads((await complete(model, ask())).text)["final_answer"] == "42"
    assert (await complete(model, ask())).text == "second"


def test_scripted_provider_without_script_names_the_setting() -> None:
    settings = load_settings(model={"provider": "scripted"})

    with pytest.raises(ConfigError, match="THINKBOX_MODEL__SCRIPT"):
        factory.get_model(settings)


def test_openai_provider_without_base_url_names_the_setting() -> None:
    settings = load_settings(model={"provider": "openai"})

    with pytest.raises(ConfigError, match="THINKBOX_MODEL__BASE_URL"):
        factory.get_model(settings)


def test_missing_local_backend_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {**factory.available(), "local": "thinkbox.models.not_installed:LocalModel.from_settings"}
    monkeypatch.setattr(factory, "available", lambda: table)
    settings = load_settings()
    assert settings.resolved_provider() == "local"

    with pytest.raises(ConfigError) as info:
        factory.get_model(settings)

    assert "scripts/setup.sh" in str(info.value)
    assert "thinkbox model install" in str(info.value)


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        factory.provider_factory("nope")

    assert "THINKBOX_MODEL__PROVIDER" in str(info.value)
    assert "local, openai, scripted" in str(info.value)


def test_builtins_resolve_through_the_same_path_as_plugins() -> None:
    assert factory.provider_factory("openai") == OpenAICompatModel.from_settings
    assert set(factory.available()) >= {"openai", "local", "scripted"}


async def _first_sandbox() -> str | None:
    from thinkbox.errors import ThinkboxError
    from thinkbox.sandbox import registry

    for name in ["zygote", "bwrap"]:
        try:
            backend = registry.create_backend(name)
            await backend.start()
        except (ThinkboxError, ImportError, OSError):
            continue
        await backend.aclose()
        return name
    return None


def ask_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``thinkbox ask`` in a real process, on the first sandbox backend that starts here."""
    backend = asyncio.run(_first_sandbox())
    if backend is None:
        pytest.skip("no sandbox backend starts here")
    thinkbox = str(Path(sys.executable).parent / "thinkbox")
    return subprocess.run(
        [thinkbox, "ask", "--backend", backend, *args, "What is 6*7?"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip


def test_ask_against_a_closed_port_exits_2_naming_the_base_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"

    done = ask_cli("--base-url", url, "--model", "m")

    assert done.returncode == 2, done.stdout + done.stderr
    assert "THINKBOX_MODEL__BASE_URL" in done.stdout + done.stderr
    assert url in done.stdout + done.stderr


def test_ask_with_a_wrong_model_name_exits_2_listing_the_served_models(chat_server: ChatServer) -> None:
    done = ask_cli("--base-url", chat_server.base_url, "--model", "gpt-nope")

    assert done.returncode == 2, done.stdout + done.stderr
    assert "THINKBOX_MODEL__NAME" in done.stdout + done.stderr
    assert "other-model, test-model" in done.stdout + done.stderr


async def test_record_setting_writes_each_call_to_a_replayable_file(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["one", "two"]))
    record = tmp_path / "calls.jsonl"
    settings = load_settings(model={"provider": "scripted", "script": str(script), "record": str(record)})

    model = factory.get_model(settings)
    await complete(model, ask())
    await complete(model, ask())

    assert scripted_replies(record) == ["one", "two"]


async def test_a_plugin_registered_by_entry_point_is_found_and_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[thinkbox.model_backends]\necho = echo_plugin:EchoModel.build\n")
    (tmp_path / "echo_plugin.py").write_text(
        "from thinkbox.models.scripted import ScriptedModel\n"
        "class EchoModel:\n"
        "    @classmethod\n"
        "    def build(cls, settings):\n"
        "        return ScriptedModel(['echo:' + settings.model.name], name='echo')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert factory.available()["echo"] == "echo_plugin:EchoModel.build"
    model = factory.create_model("echo", load_settings(model={"name": "x"}))

    assert (await complete(model, ask())).text == "echo:x"


async def test_preload_loads_the_weights_through_wrappers_and_leaves_a_failure_to_the_first_request(
    tmp_path: Path,
) -> None:
    """``thinkbox ask`` loads the model while the sandbox starts (preload); a model that cannot load is
    reported by its first request, as before, not by the preload."""
    from thinkbox.errors import ModelUnavailable

    class Weights:
        name = "weights"

        def __init__(self, fails: bool) -> None:
            self.fails, self.loads = fails, 0

        async def load(self) -> None:
            self.loads += 1
            if self.fails:
                raise ModelUnavailable("no weights here")

    for fails in (False, True):
        inner = Weights(fails)
        wrapped = RetryingModel(inner, max_retries=1)  # type: ignore[arg-type]
        assert await factory.preload(wrapped) is wrapped
        assert inner.loads == 1
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["hello"]))
    scripted = factory.scripted_from_settings(load_settings(model={"provider": "scripted", "script": script}))
    assert await factory.preload(scripted) is scripted  # nothing to load: unchanged
