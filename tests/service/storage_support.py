"""Helpers of the storage tests that run real sandbox sessions (tests/service/test_storage_sandbox.py)."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig
from thinkbox.service.storage import Storage

OPT_OUT = "THINKBOX_TEST_ALLOW_NO_SANDBOX"
"""As in tests/sandbox: the zygote and bwrap backends must start here, or the run fails (a storage
isolation suite that passes by skipping proves nothing); machines without namespaces opt out."""
BASE = SessionConfig(limits=Limits(timeout_s=20))


async def start_backend(name: str) -> SandboxBackend:
    try:
        backend = registry.create_backend(name)
        await backend.start()
    except (ThinkboxError, ImportError, OSError) as exc:
        if os.environ.get(OPT_OUT) != "1":
            pytest.fail(f"the {name} backend cannot start here: {exc}; set {OPT_OUT}=1 to skip")
        pytest.skip(f"the {name} backend cannot run here: {exc}")
    return backend


def make_storage(root: Path, **limits: int) -> Storage:
    values = {
        "user_quota_bytes": 1 << 20,
        "user_quota_files": 100,
        "tenant_quota_bytes": 4 << 20,
        "tenant_quota_files": 400,
        "max_upload_bytes": 1 << 20,
        **limits,
    }
    return Storage(root, **values)


async def open_as(backend: SandboxBackend, storage: Storage, tenant: str, user: str) -> Session:
    return await backend.create_session(storage.session_config(tenant, user, BASE))


async def value(session: Session, code: str) -> Any:
    """The value of the cell's last expression (a literal), asserting that the cell ran without error."""
    result = await session.execute(code)
    assert result.ok and result.result is not None, result
    return ast.literal_eval(result.result)


PROBE = """
import os
def probe(path, how):
    try:
        if how == "read":
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        if how == "list":
            return sorted(os.listdir(path))
        if how == "scandir":
            with os.scandir(path) as it:
                return sorted(e.name for e in it)
        if how == "write":
            with open(path, "w") as f:
                f.write("written by the session")
            return "written"
        if how == "rename":
            os.rename(path, path + ".moved")
            return "renamed"
        if how == "rmdir":
            os.rmdir(path)
            return "removed"
        if how == "chmod":
            os.chmod(path, 0o777)
            return "chmodded"
    except OSError as exc:
        return type(exc).__name__
def everything(top="/workspace"):
    found = {}
    for folder, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            found[path] = probe(path, "read")
    return found
"""
"""Defines ``probe(path, how)``: what the session gets (content, names, or the error's type), and
``everything()``: every file below /workspace the session can find by walking, with its content."""
