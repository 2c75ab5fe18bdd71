"""Shared by every test directory. Keep this small: each area (tests/sandbox, ...) has its own conftest.py."""

from __future__ import annotations

import os

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    backends = os.environ.get("THINKBOX_TEST_BACKEND", "all that run here")
    return f"thinkbox tests: uid {os.getuid()}, sandbox backends: {backends}"
