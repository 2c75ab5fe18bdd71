"""``thinkbox bench egress`` runs end to end, small: the JSON has its keys and every figure is there.
Timings are the benchmark's business, never asserted here (exit status 1 only says the target was missed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

THINKBOX = Path(sys.executable).parent / "thinkbox"
FIGURES = (
    "direct_ms_p50", "direct_ms_p99", "proxy_ms_p50", "proxy_ms_p99", "proxy_added_ms_p50",
    "in_session_ms_p50", "in_session_ms_p99",
)  # fmt: skip


def test_bench_egress_small_reports_every_figure() -> None:
    proc = subprocess.run(
        [str(THINKBOX), "bench", "egress", "--json", "--samples", "25"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:] + proc.stdout[-3000:]
    report = json.loads(proc.stdout)
    assert report["samples"] == 25
    assert all(isinstance(report[key], float) for key in FIGURES), report
    assert report["target_added_le_5ms"] is (proc.returncode == 0)
    assert report["machine"]["cores"] >= 1 and "loadavg_1m_at_end" in report["machine"]
