"""Model providers by short name, and :func:`get_model`, which builds the one the settings name.

A provider is a callable ``(Settings) -> ModelBackend``. Built-ins register through the same entry-point
group as third-party packages (``thinkbox.model_backends`` in pyproject.toml)::

    [project.entry-points."thinkbox.model_backends"]
    myprovider = "my_package.backend:MyModel.from_settings"

The table below is the fallback when package metadata is unavailable. Providers are imported only when
chosen, so optional dependencies (llama-cpp-python for ``local``) stay optional.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import cast

from thinkbox.config import Settings
from thinkbox.errors import ConfigError, ThinkboxError
from thinkbox.models.base import ModelBackend
from thinkbox.models.recording import RecordingModel
from thinkbox.models.retrying import RetryingModel

GROUP = "thinkbox.model_backends"
_BUILTIN = {
    "openai": "thinkbox.models.openai_compat:OpenAICompatModel.from_settings",
    "local": "thinkbox.models.local:LocalModel.from_settings",
    "scripted": "thinkbox.models.factory:scripted_from_settings",
}
_NOT_RETRIED = {"local"}
"""A local model's failures are not transient network trouble: retrying only repeats a long wait."""

ProviderFactory = Callable[[Settings], ModelBackend]


def available() -> dict[str, str]:
    """Name -> ``module:attribute`` of every known provider."""
    table = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        table[ep.name] = ep.value
    return table


def provider_factory(name: str) -> ProviderFactory:
    """The factory of provider ``name``, imported now. Raises ConfigError naming what to install or set."""
    table = available()
    if name not in table:
        raise ConfigError(
            f"unknown model provider {name!r}; set THINKBOX_MODEL__PROVIDER to one of: "
            + ", ".join(sorted(table))
        )
    module_name, _, attribute = table[name].partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _missing(name, table[name], exc) from None
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model provider {name!r} ({table[name]}) is not callable")
    return cast(ProviderFactory, target)


def create_model(name: str, settings: Settings) -> ModelBackend:
    """The bare backend of provider ``name`` (no retrying)."""
    try:
        return provider_factory(name)(settings)
    except ModuleNotFoundError as exc:  # an import inside the factory
        raise _missing(name, available()[name], exc) from None


def get_model(settings: Settings) -> ModelBackend:
    """The backend ``settings`` name, wrapped in :class:`RetryingModel` where retrying can help, and in
    :class:`RecordingModel` when ``model.record`` names a file."""
    provider = settings.resolved_provider()
    model = create_model(provider, settings)
    if settings.model.record is not None:
        model = RecordingModel(model, settings.model.record)
    if provider in _NOT_RETRIED or settings.model.max_retries == 0:
        return model
    return RetryingModel(model, max_retries=settings.model.max_retries)


async def preload(model: ModelBackend) -> ModelBackend:
    """``model``, its weights loaded now when it has any (a local model; through its wrappers). A load
    that fails is left to the first request, which reports it as that request's error."""
    inner: object = model
    while not hasattr(inner, "load") and hasattr(inner, "inner"):
        inner = inner.inner
    load = getattr(inner, "load", None)
    if load is not None:
        with contextlib.suppress(ThinkboxError):
            await load()
    return model


def scripted_from_settings(settings: Settings) -> ModelBackend:
    """The ``scripted`` provider: replays ``settings.model.script`` (a JSON list of replies)."""
    if settings.model.script is None:
        raise ConfigError(
            "the scripted model needs its replies: set THINKBOX_MODEL__SCRIPT (or --script) to a JSON file "
            "holding a list of replies"
        )
    from thinkbox.models.scripted import ScriptedModel

    return ScriptedModel.from_file(settings.model.script)


def _missing(name: str, ref: str, exc: ModuleNotFoundError) -> ConfigError:
    if name == "local":
        if exc.name == "llama_cpp":
            how = "install its runtime: pip install 'thinkbox[local]' (scripts/setup.sh does it)"
        else:
            how = "install it with scripts/setup.sh, then `thinkbox model install`"
        return ConfigError(
            f"the local model backend is not available (missing module {exc.name!r}): {how}; or set "
            "THINKBOX_MODEL__BASE_URL to an OpenAI-compatible endpoint"
        )
    return ConfigError(
        f"model provider {name!r} ({ref}) cannot be imported: missing module {exc.name!r}; install the "
        "package that provides it, or choose another THINKBOX_MODEL__PROVIDER"
    )
