"""Shared by every test directory. Keep this small: each area (tests/sandbox, ...) has its own conftest.py."""

from __future__ import annotations

import os

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    backends = os.environ.get("THINKBOX_TEST_BACKEND", "all that run here")
    return f"thinkbox tests: uid {os.getuid()}, sandbox backends: {backends}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``model`` run the real local LLM: only when selected (``pytest -m model``), so that a
    plain run never starts a second model process beside one already running (2 cores)."""
    if "model" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="runs the real local model: select it with `pytest -m model`")
    for item in items:
        if "model" in item.keywords:
            item.add_marker(skip)
