"""Agent tests run the loop against a real sandbox: zygote, else bwrap (THINKBOX_TEST_BACKEND picks one)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from agent_support import make_settings

from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig


async def _first_working_backend() -> tuple[SandboxBackend | None, list[str]]:
    wanted = os.environ.get("THINKBOX_TEST_BACKEND")
    reasons: list[str] = []
    for name in [wanted] if wanted else ["zygote", "bwrap"]:
        try:
            backend = registry.create_backend(name)
            await backend.start()
            return backend, reasons
        except (ThinkboxError, ImportError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    return None, reasons


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def backend() -> AsyncIterator[SandboxBackend]:
    """One backend for the whole agent suite (it starts in 2-3 s here); tests mark loop_scope="session"."""
    found, reasons = await _first_working_backend()
    if found is None:
        pytest.skip("no sandbox backend runs here: " + "; ".join(reasons))
    try:
        yield found
    finally:
        await found.aclose()


@pytest.fixture
def limits() -> Limits:
    return Limits(timeout_s=10.0, kill_grace_s=1.0)


@pytest_asyncio.fixture(loop_scope="session")
async def session(backend: SandboxBackend, limits: Limits) -> AsyncIterator[Session]:
    session = await backend.create_session(SessionConfig(limits=limits))
    try:
        yield session
    finally:
        await session.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
