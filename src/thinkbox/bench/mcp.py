"""``thinkbox bench mcp``: what the MCP server adds to running code, against ``Session.execute`` directly.

One run measures both sides, interleaved: a sandbox session of the settings' backend in this process
(``Session.execute``), and ``thinkbox mcp`` started as a stdio subprocess by the ``mcp`` SDK's client
(``run_code`` in a session made with ``create_session``), on a fresh data dir. The code is the same small
cell on both sides; rounds alternate between them so that a slow spell of the machine hits both. The added
latency is the difference of the medians. How each figure is taken is in :data:`METHOD`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from thinkbox.bench.sandbox import p99
from thinkbox.bench.service_server import machine
from thinkbox.config import load_settings
from thinkbox.errors import SandboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.types import SessionConfig

Progress = Callable[[str], None]
CODE = "x = 1 + 1\nx"
ROUND = 25
TARGET_MS = 3.0
METHOD = {
    "direct": "Session.execute(CODE) on a session of the settings' backend in the bench process, wall time",
    "mcp": "client.call_tool('run_code', ...) through the mcp SDK's stdio client to `thinkbox mcp` (a "
    "subprocess with its own backend), wall time in the bench process, the result parsed by the SDK",
    "added_ms_p50": "median of mcp minus median of direct; rounds of "
    f"{ROUND} calls alternate between the two sides; a warm-up round of each is not counted",
}


class McpBench(BaseModel):
    """One run of the benchmark; times in milliseconds."""

    samples: int
    code: str = CODE
    backend: str
    direct_ms_p50: float | None = None
    direct_ms_p99: float | None = None
    mcp_ms_p50: float | None = None
    mcp_ms_p99: float | None = None
    added_ms_p50: float | None = None
    start_s: float | None = Field(None, description="From launching `thinkbox mcp` to its tool list.")
    target_added_le_3ms: bool = False
    machine: dict[str, Any] = Field(default_factory=machine)
    method: dict[str, str] = Field(default_factory=lambda: dict(METHOD))


async def run_mcp_bench(samples: int = 400, progress: Progress = lambda _m: None) -> McpBench:
    """Measure both sides, ``samples`` calls each."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    settings = load_settings()
    report = McpBench(samples=samples, backend=settings.sandbox.backend)
    data_dir = Path(tempfile.mkdtemp(prefix="thinkbox-bench-mcp-"))
    script = data_dir / "script.json"
    script.write_text('["unused"]\n')
    command = Path(sys.executable).parent / "thinkbox"
    params = StdioServerParameters(
        command=str(command),
        args=["mcp", "--data-dir", str(data_dir / "data"), "--model", "scripted", "--script", str(script)],
        env=dict(os.environ),
    )
    backend = registry.create_backend(settings.sandbox.backend)
    direct: list[float] = []
    through: list[float] = []
    try:
        await backend.start()
        session = await backend.create_session(SessionConfig(limits=settings.sandbox.limits))
        progress("starting thinkbox mcp (stdio)")
        started = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            report.start_s = time.perf_counter() - started
            made = await client.call_tool("create_session", {})
            if made.is_error:
                raise SandboxError(f"thinkbox mcp could not make a session: {made.content}")
            arguments = {"session_id": made.structured_content["session_id"], "code": CODE}

            async def one_direct() -> float:
                t = time.perf_counter()
                result = await session.execute(CODE)
                elapsed = (time.perf_counter() - t) * 1000
                if result.result != "2":
                    raise SandboxError(f"the direct session answered {result!r}")
                return elapsed

            async def one_mcp() -> float:
                t = time.perf_counter()
                result = await client.call_tool("run_code", arguments)
                elapsed = (time.perf_counter() - t) * 1000
                if result.is_error or result.structured_content["result"] != "2":
                    raise SandboxError(f"run_code answered {result.content!r}")
                return elapsed

            for _ in range(ROUND):  # warm-up, not counted
                await one_direct()
                await one_mcp()
            while len(through) < samples:
                direct += [await one_direct() for _ in range(ROUND)]
                through += [await one_mcp() for _ in range(ROUND)]
                progress(f"{len(through)}/{samples} calls each")
            await client.call_tool("close_session", {"session_id": arguments["session_id"]})
        await session.close()
    finally:
        await backend.aclose()
        shutil.rmtree(data_dir, ignore_errors=True)
    report.direct_ms_p50, report.direct_ms_p99 = statistics.median(direct), p99(direct)
    report.mcp_ms_p50, report.mcp_ms_p99 = statistics.median(through), p99(through)
    report.added_ms_p50 = report.mcp_ms_p50 - report.direct_ms_p50
    report.target_added_le_3ms = report.added_ms_p50 <= TARGET_MS
    return report


def render(report: McpBench, console: Console) -> None:
    table = Table(title="thinkbox MCP benchmark (stdio)", title_justify="left")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for label, value in (
        ("Session.execute p50 / p99", f"{report.direct_ms_p50:.2f} / {report.direct_ms_p99:.2f} ms"),
        ("run_code over MCP p50 / p99", f"{report.mcp_ms_p50:.2f} / {report.mcp_ms_p99:.2f} ms"),
        ("added latency p50", f"{report.added_ms_p50:.2f} ms"),
        ("thinkbox mcp start to tool list", f"{report.start_s:.2f} s"),
        ("calls per side; backend", f"{report.samples}; {report.backend}"),
    ):
        table.add_row(label, value)
    console.print(table)
    verdict = "met" if report.target_added_le_3ms else "MISSED"
    console.print(f"target: added latency p50 <= {TARGET_MS:g} ms: {verdict}")
    console.print(f"machine: {report.machine}")
    for name, how in report.method.items():
        console.print(f"[dim]{name}: {how}[/dim]")
