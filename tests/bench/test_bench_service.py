"""``thinkbox bench service`` runs end to end, small: the JSON has its keys, no event is lost or duplicated,
no run is stuck, and every run interrupted by the kill -9 finishes after the restart. Timings are the
benchmark's business, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

THINKBOX = Path(sys.executable).parent / "thinkbox"
KEYS = {
    "runs", "runs_per_s", "lost_events", "duplicated_events", "stuck_runs", "total_s", "first_event_ms_p50",
    "first_event_ms_p99", "terminal_ms_p50", "terminal_ms_p99", "step_overhead_ms_p50",
    "crash_resumed_fraction", "peak_rss_mib", "machine", "idle_first_event_ms", "targets", "method",
}  # fmt: skip


def test_bench_service_small_loses_nothing_and_every_interrupted_run_finishes() -> None:
    proc = subprocess.run(
        [str(THINKBOX), "bench", "service", "--json", "--runs", "20", "--users", "4", "--tenants", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(proc.stderr[-3000:] + proc.stdout[-3000:]) from None
    summary = {
        k: report.get(k) for k in ("errors", "succeeded", "lost_events", "duplicated_events", "targets")
    }
    assert proc.returncode == 0, (summary, proc.stderr[-2000:])
    assert report.keys() >= KEYS
    assert report["errors"] == []
    assert report["runs"] == report["succeeded"] == 20 and report["users"] == 4 and report["tenants"] == 2
    assert report["lost_events"] == report["duplicated_events"] == report["stuck_runs"] == 0
    assert report["events_per_run"] > 10
    assert report["crash_interrupted"] > 0 and report["crash_resumed_fraction"] == 1.0
    assert report["crash_lost_events"] == report["crash_duplicated_events"] == report["crash_stuck_runs"] == 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    for key in (
        "runs_per_s",
        "first_event_ms_p50",
        "terminal_ms_p99",
        "step_overhead_ms_p50",
        "peak_rss_mib",
    ):
        assert isinstance(report[key], int | float), key
