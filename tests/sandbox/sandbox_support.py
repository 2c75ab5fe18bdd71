"""Helpers the sandbox tests import (a module of its own: ``conftest`` is a name every test folder has)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend

REQUIRED = ("zygote", "bwrap")
"""Backends that scripts/setup.sh installs: where one cannot start, the suite fails instead of skipping
(an escape suite that passes by skipping proves nothing). Machines without namespaces opt out with
THINKBOX_TEST_ALLOW_NO_SANDBOX=1."""
OPT_OUT = "THINKBOX_TEST_ALLOW_NO_SANDBOX"


async def start_backend(name: str, **options: object) -> SandboxBackend:
    """A started backend; where it cannot run here, a failure (REQUIRED backends) or a skip, saying why."""
    try:
        backend = registry.create_backend(name, **options)
        await backend.start()
    except (ThinkboxError, ImportError, OSError) as exc:
        if name in REQUIRED and os.environ.get(OPT_OUT) != "1":
            pytest.fail(
                f"the {name} backend cannot start here: {exc}. The sandbox suites must run for real; "
                f"on a machine without namespaces set {OPT_OUT}=1 to skip them"
            )
        pytest.skip(f"the {name} backend cannot run here: {exc}")
    return backend


def descendants(pid: int | None = None) -> set[int]:
    """Host pids of every live (non-zombie) process below ``pid`` (default: this test process)."""
    found: set[int] = set()
    todo = [pid or os.getpid()]
    while todo:
        parent = todo.pop()
        try:
            children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and child not in found:
                found.add(child)
                todo.append(child)
    return found
