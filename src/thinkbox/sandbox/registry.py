"""Sandbox backends by short name. Built-ins register through the same entry-point group as third-party
backends (``thinkbox.sandbox_backends`` in pyproject.toml); the table below is the fallback when the
package metadata is unavailable. Backends are imported lazily, so optional dependencies stay optional.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from thinkbox.errors import ConfigError
from thinkbox.sandbox.backend import SandboxBackend

GROUP = "thinkbox.sandbox_backends"
_BUILTIN = {
    "zygote": "thinkbox.sandbox.zygote.backend:ZygoteBackend",
    "bwrap": "thinkbox.sandbox.bwrap.backend:BwrapBackend",
    "docker": "thinkbox.sandbox.docker.backend:DockerBackend",
}


def available() -> dict[str, str]:
    """Name -> ``module:Class`` of every known backend."""
    table = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        table[ep.name] = ep.value
    return table


def backend_class(name: str) -> type[SandboxBackend]:
    table = available()
    if name not in table:
        raise ConfigError(
            f"unknown sandbox backend {name!r}; set THINKBOX_SANDBOX__BACKEND or --backend to one of: "
            + ", ".join(sorted(table))
        )
    module, _, attr = table[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, SandboxBackend)):
        raise ConfigError(f"sandbox backend {name!r} ({table[name]}) is not a SandboxBackend")
    return cls


def create_backend(name: str, **options: Any) -> SandboxBackend:
    return backend_class(name)(**options)
