"""End to end through the API on the embedded defaults: ``thinkbox serve`` with the real local model and
the default sandbox, a key from ``thinkbox admin``, a question over HTTP, the answer computed by code, and
a file the run wrote found in the user's folder. Marked ``model`` (CI runs it with ``-m model``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .service_support import ProcessServer, read_sse, require_embedded_model

pytestmark = pytest.mark.model
THINKBOX = str(Path(sys.executable).with_name("thinkbox"))


def test_the_embedded_model_answers_through_the_service(tmp_path: Path) -> None:
    require_embedded_model()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THINKBOX_MODEL__")}
    env["THINKBOX_CONFIG"] = str(tmp_path / "none.toml")
    admin = [THINKBOX, "admin", "--data-dir", str(data_dir)]
    for argv in (["tenant", "create", "acme"], ["user", "create", "acme", "alice"]):
        subprocess.run([*admin[:2], *argv, *admin[2:]], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [THINKBOX, "admin", "key", "create", "acme", "alice", "--data-dir", str(data_dir)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    server = ProcessServer(data_dir, env).start(timeout=180)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        question = "What is 48271 * 9173? Also write the result to the file product.txt."
        run = httpx.post(f"{server.url}/v1/runs", json={"question": question}, headers=headers, timeout=30)
        assert run.status_code == 201, run.text
        with httpx.stream(
            "GET", f"{server.url}/v1/runs/{run.json()['id']}/events", headers=headers, timeout=600
        ) as response:
            events = read_sse(response)
        assert events[-1]["event"] == "run_finished", events[-3:]
        info = httpx.get(f"{server.url}/v1/runs/{run.json()['id']}", headers=headers).json()
        assert info["status"] == "succeeded", info
        assert "442789883" in re.sub(r"[,\s_]", "", info["answer"] or "")
        assert any(e["event"] == "execution_finished" for e in events), "the answer was not computed by code"
        files = httpx.get(f"{server.url}/v1/files", headers=headers).json()["files"]
        if any(f["path"] == "product.txt" for f in files):  # a small model does not always write the file
            body = httpx.get(f"{server.url}/v1/files/product.txt", headers=headers).text
            assert "442789883" in body
            assert (data_dir / "storage" / "acme" / "alice" / "product.txt").exists()
    finally:
        server.stop()
