"""Runs survive a crash: ``thinkbox serve`` is killed with SIGKILL mid-run and started again on the same
data dir; every interrupted run finishes, the model is not asked again for recorded steps, the session's
state is rebuilt by replay, and a client resuming with its last event id gets the rest exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from thinkbox.service.db.engine import Database

from .service_support import ProcessServer, make_account, read_sse

SCRIPT = {
    "by_step": True,
    "replies": [
        {"thought": "set", "action": "execute_code", "code": "x = 6", "final_answer": ""},
        {
            "thought": "slow",
            "action": "execute_code",
            "code": "import time\ntime.sleep(1.5)\ny = x * 7",
            "final_answer": "",
        },
        {"thought": "show", "action": "execute_code", "code": "print(y)", "final_answer": ""},
        {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "42"},
    ],
}


def _env(data_dir: Path, db_url: str) -> dict[str, str]:
    script = data_dir / "script.json"
    script.write_text(json.dumps(SCRIPT))
    return {
        "THINKBOX_MODEL__PROVIDER": "scripted",
        "THINKBOX_MODEL__SCRIPT": str(script),
        "THINKBOX_SERVICE__DATABASE_URL": db_url,
        "THINKBOX_SANDBOX__POOL_SIZE": "0",
        "THINKBOX_CONFIG": str(data_dir / "none.toml"),
    }


def _events(url: str, headers: dict[str, str], run_id: str, after: int) -> list[dict[str, Any]]:
    with httpx.stream(
        "GET", f"{url}/v1/runs/{run_id}/events", headers={**headers, "Last-Event-ID": str(after)}, timeout=120
    ) as response:
        assert response.status_code == 200
        return read_sse(response)


def test_kill_9_mid_run_then_restart_finishes_every_run(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = _env(data_dir, db_url)
    server = ProcessServer(data_dir, env).start()
    try:
        db = Database.open(db_url)
        alice, carol = make_account(db, "acme", "alice"), make_account(db, "globex", "carol")
        db.dispose()
        runs = []
        for who in (alice, alice, carol):
            response = httpx.post(
                f"{server.url}/v1/runs", json={"question": "six times seven"}, headers=who.headers, timeout=30
            )
            assert response.status_code == 201, response.text
            runs.append((who, response.json()["id"]))
        seen: dict[str, list[dict[str, Any]]] = {run_id: [] for _, run_id in runs}
        deadline = time.monotonic() + 30
        # read each run's events as a client would until it is inside the slow step 2, then crash the server
        for who, run_id in runs:
            with httpx.stream(
                "GET", f"{server.url}/v1/runs/{run_id}/events", headers=who.headers, timeout=30
            ) as response:
                current: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        current = {"id": int(line[4:])}
                    elif line.startswith("event: "):
                        current["event"] = line[7:]
                    elif line.startswith("data: "):
                        current["data"] = json.loads(line[6:])
                        seen[run_id].append(current)
                        if current["event"] == "code_started" and current["data"]["step"] == 2:
                            break
                    assert time.monotonic() < deadline
        server.kill()
        before = {run_id: [e["id"] for e in events] for run_id, events in seen.items()}
        assert all(ids and ids == list(range(1, len(ids) + 1)) for ids in before.values())

        server = ProcessServer(data_dir, env)
        server.start()
        for who, run_id in runs:
            rest = _events(server.url, who.headers, run_id, after=len(seen[run_id]))
            everything = seen[run_id] + rest
            assert [e["id"] for e in everything] == list(range(1, len(everything) + 1)), run_id
            types = [e["event"] for e in everything]
            assert "run_resumed" in types and types[-1] == "run_finished"
            assert everything[-1]["data"]["status"] == "answered"
            resumed = everything[types.index("run_resumed")]["data"]
            assert resumed["replayed_cells"] >= 1
            # steps recorded before the crash were not asked of the model again
            asked = [e["data"]["step"] for e in everything if e["event"] == "action_parsed"]
            assert sorted(asked) == [1, 2, 3, 4] and len(set(asked)) == 4, asked
            printed = "".join(e["data"]["text"] for e in everything if e["event"] == "output_chunk")
            assert printed.strip() == "42"  # y = x * 7 needed x from the replayed step 1
            info = httpx.get(f"{server.url}/v1/runs/{run_id}", headers=who.headers).json()
            assert info["status"] == "succeeded" and info["answer"] == "42"
            assert info["events"] == len(everything)
    finally:
        server.stop()
