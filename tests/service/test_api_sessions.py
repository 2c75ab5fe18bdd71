"""/v1/sessions through the real HTTP API: code runs in a persistent sandbox session of the caller, JSON
or streamed; sessions are listed, closed, never shared, and a closed one answers 410 with a hint."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import Running
from .service_support import read_sse


def execute(client: httpx.Client, session_id: str, code: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"/v1/sessions/{session_id}/execute", json={"code": code, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_session_keeps_its_state_and_reports_results_and_errors(running: Running) -> None:
    with running.client(running.alice) as client:
        created = client.post("/v1/sessions")
        assert created.status_code == 201
        sid = created.json()["id"]
        assert execute(client, sid, "x = 20")["error"] is None
        out = execute(client, sid, "print(x + 1)\nx * 2")
        assert out["stdout"] == "21\n" and out["result"] == "40" and out["duration_ms"] > 0
        failed = execute(client, sid, "1 / 0")
        assert failed["error"]["type"] == "ZeroDivisionError" and "1 / 0" in failed["error"]["traceback"]
        slow = execute(client, sid, "import time; time.sleep(5)", timeout=0.5)
        assert slow["timed_out"] is True
        assert execute(client, sid, "x")["result"] == "20"
        listed = client.get("/v1/sessions").json()["sessions"]
        assert sid in [s["id"] for s in listed] and next(s for s in listed if s["id"] == sid)["live"]


def test_execute_streams_as_server_sent_events_when_asked(running: Running) -> None:
    with running.client(running.alice) as client:
        sid = client.post("/v1/sessions").json()["id"]
        code = "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr)\n'done'"
        with client.stream(
            "POST",
            f"/v1/sessions/{sid}/execute",
            json={"code": code},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_sse(response)
        kinds = [e["event"] for e in events]
        assert kinds[-1] == "result" and "stdout" in kinds and "stderr" in kinds
        assert events[-1]["data"]["result"] == "'done'"
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))


def test_sessions_are_never_shared_and_closed_ones_are_gone(running: Running) -> None:
    with running.client(running.alice) as alice:
        sid = alice.post("/v1/sessions").json()["id"]
        execute(alice, sid, "token = 'alice-only'")
        for who in (running.bob, running.carol):
            with running.client(who) as other:
                for method, path, body in (
                    ("GET", f"/v1/sessions/{sid}", None),
                    ("POST", f"/v1/sessions/{sid}/execute", {"code": "print(token)"}),
                    ("DELETE", f"/v1/sessions/{sid}", None),
                ):
                    response = other.request(method, path, json=body)
                    assert response.status_code == 404, (who.user, method, path, response.text)
                assert sid not in other.get("/v1/sessions").text
                run = other.post("/v1/runs", json={"question": "hi", "session_id": sid})
                assert run.status_code == 404
        assert alice.delete(f"/v1/sessions/{sid}").status_code == 204
        gone = alice.post(f"/v1/sessions/{sid}/execute", json={"code": "1"})
        assert gone.status_code == 410 and "new session" in gone.json()["error"]["message"]
        follow_up = alice.post("/v1/runs", json={"question": "hi", "session_id": sid})
        assert follow_up.status_code == 410 and "POST /v1/sessions" in follow_up.json()["error"]["message"]
        info = alice.get(f"/v1/sessions/{sid}").json()
        assert info["closed_at"] is not None and info["close_reason"] == "deleted" and not info["live"]


def test_bad_execute_requests(running: Running) -> None:
    with running.client(running.alice) as client:
        sid = client.post("/v1/sessions").json()["id"]
        for body in ({"code": "1", "timeout": -1}, {"code": "1", "extra": True}, {"timeout": 1}):
            response = client.post(f"/v1/sessions/{sid}/execute", json=body)
            assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_a_shell_session_and_a_javascript_cell_in_it(running: Running) -> None:
    with running.client(running.bob) as client:
        created = client.post("/v1/sessions", json={"language": "sh"})
        assert created.status_code == 201 and created.json()["language"] == "sh"
        sid = created.json()["id"]
        assert execute(client, sid, "n=6; cd /tmp")["error"] is None
        out = execute(client, sid, "echo $((n * 7)) in $(pwd)")
        assert out["stdout"] == "42 in /tmp\n"
        js = execute(client, sid, "[1, 2, 3].map(x => x * 2)", language="js")
        assert js["result"] == "[ 2, 4, 6 ]"
        unknown = client.post("/v1/sessions", json={"language": "cobol"})
        assert unknown.status_code == 422 and "language" in unknown.json()["error"]["message"]
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
