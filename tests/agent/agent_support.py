"""Helpers the agent tests import (a module of its own: ``conftest`` is a name every test folder has)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinkbox.config import Settings


def make_settings(tmp_path: Path, **agent: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", agent=agent)  # type: ignore[arg-type]
