"""``thinkbox bench reasoning`` as a user runs it: the installed entry point, the scripted provider, a real
sandbox (THINKBOX_TEST_BACKEND, else zygote, else bwrap)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thinkbox.bench.reasoning.router import DEFAULT_ROUTER, ROUTERS
from thinkbox.bench.reasoning.tasks import get_family

THINKBOX = Path(sys.executable).parent / "thinkbox"


def bench(tmp_path: Path, *args: str, script: list[object], backend: str) -> subprocess.CompletedProcess[str]:
    script_file = tmp_path / "script.json"
    script_file.write_text(json.dumps(script))
    env = {
        **os.environ,
        "THINKBOX_CONFIG": str(tmp_path / "absent.toml"),
        "THINKBOX_MODEL__PROVIDER": "scripted",
        "THINKBOX_MODEL__SCRIPT": str(script_file),
        "THINKBOX_SANDBOX__BACKEND": backend,
    }
    return subprocess.run(
        [str(THINKBOX), "bench", "reasoning", *args], capture_output=True, text=True, timeout=180, env=env
    )


def test_the_command_prints_the_json_report_and_writes_its_files(tmp_path: Path) -> None:
    items = get_family("products").items(2, 5, 1)
    script: list[object] = ["0", "0"]  # the direct arm on both items, then the code arm
    for item in items:
        expr = re.search(r"multiplication: ([\d *]+)\.", item.question)
        assert expr
        script += [
            {"thought": "", "action": "execute_code", "code": f"print({expr.group(1)})", "final_answer": ""},
            {"thought": "", "action": "provide_answer", "code": "", "final_answer": item.expected},
        ]
    out = tmp_path / "out"
    args = ["--families", "products", "--n", "2", "--seed", "5", "--difficulty", "1", "--arms", "direct,code",
            "--out", str(out), "--json"]  # fmt: skip
    wanted = os.environ.get("THINKBOX_TEST_BACKEND")
    reasons = []
    for backend in [wanted] if wanted else ["zygote", "bwrap"]:
        proc = bench(tmp_path, *args, script=script, backend=backend)
        if proc.returncode == 0:
            break
        reasons.append(f"{backend}: {proc.stderr[-400:]}")
    else:
        if all("sandbox" in r for r in reasons):
            pytest.skip("no sandbox backend runs here: " + "; ".join(reasons))
        pytest.fail("; ".join(reasons))

    data = json.loads(proc.stdout)
    assert data["families"]["products"]["direct"]["accuracy"] == 0.0
    assert (
        data["families"]["products"]["code"] | {"accuracy": 1.0, "n": 2, "code_rate": 1.0}
        == (data["families"]["products"]["code"])
    )
    assert data["summary"]["code_minus_direct_pp"] == 100.0
    assert data["command"].startswith("thinkbox bench reasoning --families products")
    assert data["router"] == DEFAULT_ROUTER  # the command's default is the library's
    assert data["split"] == "dev" and data["seed"] == 5 and data["agent"]["id"]  # --seed overrides dev's 0
    assert {p.name for p in out.iterdir()} == {"results.jsonl", "report.json", "report.md", "chart.png"}


def test_the_help_names_every_router_design_and_the_default() -> None:
    proc = subprocess.run([str(THINKBOX), "bench", "reasoning", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.split())
    assert all(name in help_text for name in ROUTERS)
    assert f"{DEFAULT_ROUTER} (the default)" in help_text


def test_an_unknown_family_exits_2_naming_the_flag(tmp_path: Path) -> None:
    proc = bench(
        tmp_path, "--families", "products,no_such_family", "--out", str(tmp_path), script=[], backend="zygote"
    )
    assert proc.returncode == 2
    assert "no_such_family" in proc.stderr and "--families" in proc.stderr


def test_an_unknown_split_exits_2_naming_the_flag(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--split", "holdout", "--out", str(tmp_path), script=[], backend="zygote")
    assert proc.returncode == 2
    assert "holdout" in proc.stderr and "--split" in proc.stderr


def test_the_help_names_the_splits_and_every_arm() -> None:
    proc = subprocess.run([str(THINKBOX), "bench", "reasoning", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    help_text = " ".join(proc.stdout.split())
    assert "--split" in help_text and "seed 7331" in help_text
    assert all(arm in help_text for arm in ("cot", "code:py", "code:js", "code:both"))
