"""Fixtures of the reasoning benchmark's tests: a real sandbox backend for the session, settings with
short sandbox limits."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.types import Limits


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def backend() -> AsyncIterator[SandboxBackend]:
    wanted = os.environ.get("THINKBOX_TEST_BACKEND")
    reasons = []
    for name in [wanted] if wanted else ["zygote", "bwrap"]:
        try:
            found = registry.create_backend(name)
            await found.start()
            break
        except (ThinkboxError, ImportError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    else:
        pytest.skip("no sandbox backend runs here: " + "; ".join(reasons))
    try:
        yield found
    finally:
        await found.aclose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        sandbox={"limits": Limits(timeout_s=10.0, kill_grace_s=1.0)},  # type: ignore[arg-type]
    )
