"""``ask`` over MCP on the embedded defaults: ``thinkbox mcp`` (stdio) started by the ``mcp`` SDK's client,
the real local model and the default sandbox; the answer computed by code. Marked ``model``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from .service_support import require_embedded_model

pytestmark = pytest.mark.model
THINKBOX = str(Path(sys.executable).with_name("thinkbox"))


async def test_the_embedded_model_answers_ask_over_mcp(tmp_path: Path) -> None:
    require_embedded_model()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THINKBOX_MODEL__")}
    env["THINKBOX_CONFIG"] = str(tmp_path / "none.toml")
    server = StdioServerParameters(command=THINKBOX, args=["mcp", "--data-dir", str(tmp_path / "d")], env=env)
    progress: list[str] = []

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(server, read_timeout_seconds=600) as client:
        result = await client.call_tool(
            "ask", {"question": "What is 48271 * 9173?"}, progress_callback=on_progress
        )
    data = result.structured_content
    assert not result.is_error and data["status"] == "answered", result.content
    assert "442789883" in re.sub(r"[,\s_]", "", data["answer"] or "")
    assert any(step["code"] for step in data["trace"]), "the answer was not computed by code"
    assert "step 1: thinking" in progress and any("the code ran" in m for m in progress)
