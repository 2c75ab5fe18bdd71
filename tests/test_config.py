"""Configuration: flags over THINKBOX_* variables over the TOML file; secrets masked; typos refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinkbox.config import load_settings, masked_dump
from thinkbox.errors import ConfigError


@pytest.fixture
def config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("THINKBOX_"):
            monkeypatch.delenv(key)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("THINKBOX_CONFIG", str(path))
    return path


def test_file_sets_values(config_file: Path) -> None:
    config_file.write_text('[model]\nname = "from-file"\ntimeout_s = 7\n[sandbox.limits]\ntimeout_s = 3.5\n')

    settings = load_settings()

    assert settings.model.name == "from-file"
    assert settings.model.timeout_s == 7
    assert settings.sandbox.limits.timeout_s == 3.5


def test_environment_beats_file_and_flag_beats_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.write_text('[model]\nname = "from-file"\nbase_url = "http://file/v1"\n')
    monkeypatch.setenv("THINKBOX_MODEL__NAME", "from-env")

    assert load_settings().model.name == "from-env"
    assert load_settings().model.base_url == "http://file/v1"  # the file still gives what env does not
    assert load_settings(model={"name": "from-flag"}).model.name == "from-flag"


def test_nested_environment_variables_use_double_underscore(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKBOX_SANDBOX__LIMITS__MEMORY_MIB", "2048")

    assert load_settings().sandbox.limits.memory_mib == 2048


def test_base_url_switches_auto_provider_to_openai(config_file: Path) -> None:
    assert load_settings().resolved_provider() == "local"
    assert load_settings(model={"base_url": "http://x/v1"}).resolved_provider() == "openai"


def test_api_key_is_masked_in_the_dump(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKBOX_MODEL__API_KEY", "sk-very-secret-key-1234")

    settings = load_settings()
    dumped = masked_dump(settings)

    assert settings.model.api_key is not None
    assert settings.model.api_key.get_secret_value() == "sk-very-secret-key-1234"
    assert "very-secret" not in str(dumped)
    assert dumped["model"]["api_key"] == "sk-…34"
    assert "very-secret" not in repr(settings)


def test_short_api_key_is_fully_masked(config_file: Path) -> None:
    assert masked_dump(load_settings(model={"api_key": "abc"}))["model"]["api_key"] == "***"


def test_unknown_key_in_file_is_refused_naming_key_and_file(config_file: Path) -> None:
    config_file.write_text('[model]\nnmae = "typo"\n')

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert "model.nmae" in str(info.value)
    assert str(config_file) in str(info.value)


def test_unknown_nested_environment_variable_is_refused(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKBOX_MODEL__TIMEOUT", "5")

    with pytest.raises(ConfigError, match=r"model\.timeout"):
        load_settings()


def test_invalid_value_names_the_key(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKBOX_MODEL__TIMEOUT_S", "-1")

    with pytest.raises(ConfigError, match=r"model\.timeout_s"):
        load_settings()


def test_unknown_flag_key_is_refused(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.max_stepz"):
        load_settings(agent={"max_stepz": 3})


@pytest.mark.parametrize(
    "content", [b"agent = [\n", b"[agent]\nmax_steps = 3\n[agent]\nmax_steps = 4\n", b"\xff\xfe[agent]\n"]
)
def test_a_config_file_that_is_not_toml_is_named_not_a_traceback(config_file: Path, content: bytes) -> None:
    config_file.write_bytes(content)

    with pytest.raises(ConfigError, match=f"cannot read the config file {config_file} .*THINKBOX_CONFIG"):
        load_settings()
