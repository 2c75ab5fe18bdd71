"""GET /v1/sessions/{id}/variables: what a session defines, for the web page's session panel. It runs none
of the user's code, is not a cell, is not journaled, does not count as activity, and only the session's
owner can ask; while a cell runs it answers 409."""

from __future__ import annotations

import threading
import time

import httpx

from .conftest import Running
from .service_support import program, read_sse
from .test_api_sessions import execute


def test_a_code_session_lists_its_names_and_a_listing_is_not_a_cell(running: Running) -> None:
    with running.client(running.alice) as client:
        sid = client.post("/v1/sessions").json()["id"]
        assert client.get(f"/v1/sessions/{sid}/variables").json() == {
            "live": True,
            "variables": [],
            "omitted": 0,
        }
        execute(client, sid, "import numpy as np\nrows = [1, 2]\narr = np.ones((2, 3))\n_hidden = 1\nrows")
        before = client.get(f"/v1/sessions/{sid}").json()["last_activity_at"]
        listed = client.get(f"/v1/sessions/{sid}/variables")
        assert listed.status_code == 200, listed.text
        found = {v["name"]: v for v in listed.json()["variables"]}
        assert list(found) == ["arr", "np", "rows"]
        assert found["rows"] == {"name": "rows", "type": "list", "repr": "[1, 2]"}
        assert found["arr"]["repr"] == "array 2x3 float64" and found["np"]["type"] == "module"
        assert client.get(f"/v1/sessions/{sid}").json()["last_activity_at"] == before, "counted as activity"
        assert execute(client, sid, "_")["result"] == "[1, 2]", "the listing changed the last result"
        failed = execute(client, sid, "1 / 0")
        assert "<cell-3>" in failed["error"]["traceback"], "the listing counted as a cell"


def test_a_run_session_is_listed_and_the_run_records_nothing_of_it(running: Running) -> None:
    with running.client(running.alice) as client:
        run_id = client.post("/v1/runs", json={"question": program(["total = 6 * 7"], "42")}).json()["id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            read_sse(response)
        run = client.get(f"/v1/runs/{run_id}").json()
        found = client.get(f"/v1/sessions/{run['session_id']}/variables").json()
        assert found["live"] is True
        assert {v["name"]: v["repr"] for v in found["variables"]} == {"total": "42"}
        assert client.get(f"/v1/runs/{run_id}").json()["events"] == run["events"], "the listing was journaled"


def test_only_the_owner_sees_a_sessions_names_and_a_closed_one_is_not_live(running: Running) -> None:
    with running.client(running.alice) as alice:
        sid = alice.post("/v1/sessions").json()["id"]
        execute(alice, sid, "secret = 'alice-only'")
        for who in (running.bob, running.carol):
            with running.client(who) as other:
                answer = other.get(f"/v1/sessions/{sid}/variables")
                assert answer.status_code == 404 and "alice-only" not in answer.text
        assert alice.get("/v1/sessions/s_0000000000000000/variables").status_code == 404
        assert alice.delete(f"/v1/sessions/{sid}").status_code == 204
        assert alice.get(f"/v1/sessions/{sid}/variables").json() == {
            "live": False,
            "variables": [],
            "omitted": 0,
        }
    assert httpx.get(f"{running.url}/v1/sessions/{sid}/variables").status_code == 401


def test_while_a_cell_runs_the_listing_answers_409(running: Running) -> None:
    with running.client(running.alice) as client:
        sid = client.post("/v1/sessions").json()["id"]
        worker = threading.Thread(
            target=execute, args=(client, sid, "import time\ntime.sleep(1.5)\nslept = 1")
        )
        worker.start()
        live = running.server.service.sessions.live(sid)
        deadline = time.monotonic() + 5
        while not live.session.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = client.get(f"/v1/sessions/{sid}/variables")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy", busy.text
        worker.join()
        assert [v["name"] for v in client.get(f"/v1/sessions/{sid}/variables").json()["variables"]] == [
            "slept",
            "time",
        ]
