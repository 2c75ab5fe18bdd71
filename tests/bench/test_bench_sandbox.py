"""``thinkbox bench sandbox --quick --json``: one real run, figures as numbers, written to --out too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thinkbox.bench.sandbox import _times, p50, p99

THINKBOX = Path(sys.executable).parent / "thinkbox"
NUMERIC_KEYS = (
    "warm_acquire_ms_p50",
    "warm_acquire_ms_p99",
    "fresh_session_ms_p50",
    "fresh_session_ms_p99",
    "bwrap_session_ms_p50",
    "roundtrip_ms_p50",
    "session_pss_mib",
    "burst100_s",
    "fresh_vs_bwrap_x",
    "warm_vs_bwrap_x",
)
TARGET_KEYS = (
    "warm_acquire_p50_le_1ms",
    "fresh_session_p50_le_15ms",
    "fresh_session_30x_faster_than_bwrap",
    "roundtrip_p50_le_0_5ms",
    "session_pss_le_15mib",
    "burst100_le_1s",
)


def test_quick_json_run_reports_every_figure_as_a_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(THINKBOX), "bench", "sandbox", "--quick", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    unavailable = {
        n: b["reason"] for n, b in data["backends"].items() if not b["available"] and n != "docker"
    }
    if unavailable:
        pytest.skip(f"backends not runnable here: {unavailable}")
    for key in NUMERIC_KEYS:
        assert isinstance(data[key], int | float) and data[key] > 0, (key, data[key])
    assert data["burst_sessions"] == 100
    assert data["backends"]["zygote"]["libraries_preloaded"] is True
    assert data["backends"]["bwrap"]["libraries_preloaded"] is True
    assert set(TARGET_KEYS) <= set(data["targets"])
    assert all(isinstance(v, bool) for v in data["targets"].values())
    assert data["duration_s"] < 60
    assert json.loads(out.read_text()) == data


def test_percentiles_are_median_and_nearest_rank_99th() -> None:
    values = [float(v) for v in range(1, 201)]
    assert p50(values) == 100.5
    assert p99(values) == 198.0
    assert p99([3.0, 1.0, 2.0]) == 3.0
    assert p50([]) is None and p99([]) is None


def test_ratios_below_one_read_the_other_way_round() -> None:
    assert _times(46.2, "faster than bwrap") == "46x faster than bwrap"
    assert _times(0.5, "faster") == "2.0x slower"
    assert _times(None, "faster") == ""


def test_unusable_primary_backend_exits_2_naming_it() -> None:
    proc = subprocess.run(
        [str(THINKBOX), "bench", "sandbox", "--quick", "--json", "--backends", "no-such-backend"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no-such-backend" in proc.stderr
    assert json.loads(proc.stdout)["backends"]["no-such-backend"]["available"] is False
