"""Helpers the agent tests import (a module of its own: ``conftest`` is a name every test folder has)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from thinkbox.agent.events import Event, parse_event
from thinkbox.config import Settings


def make_settings(tmp_path: Path, **agent: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", agent=agent)  # type: ignore[arg-type]


def code(text: str, action: str = "execute_code", thought: str = "compute") -> dict[str, str]:
    """A scripted model's reply that runs ``text``."""
    return {"thought": thought, "action": action, "code": text, "final_answer": ""}


def answer(text: str) -> dict[str, str]:
    """A scripted model's reply that answers ``text``."""
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": text}


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    """Every event of a run; each must survive a JSON round trip (what the service stores and sends)."""
    out = [event async for event in events]
    for event in out:
        assert parse_event(event.model_dump_json()) == event
    return out
