"""The egress proxy in the running service: a run's requests are events of the run, a session's requests
are listed for its owner, and the tenant's rules decide (SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets

from thinkbox.service.egress import rules

from .conftest import Running
from .egress_support import EchoServer
from .service_support import program, read_sse


def test_a_runs_requests_are_events_of_the_run_and_listed_for_its_session(running: Running) -> None:
    token = secrets.token_hex(8)
    with EchoServer(token).running() as api, running.client(running.alice) as client:
        rules.set_rule(running.db, "acme", "127.0.0.1", "allow")
        try:
            code = (
                "import urllib.request, urllib.error\n"
                f"for url in ({api.url + '/first'!r}, 'http://localhost:{api.port}/second'):\n"
                "    try:\n"
                "        print(urllib.request.urlopen(url, timeout=60).status)\n"
                "    except urllib.error.HTTPError as e:\n"
                "        print(e.code)"
            )
            response = client.post("/v1/runs", json={"question": program([code], "done")})
            assert response.status_code == 201, response.text
            run = response.json()
            with client.stream("GET", f"/v1/runs/{run['id']}/events") as stream:
                events = read_sse(stream)
        finally:
            rules.remove_rule(running.db, "acme", "127.0.0.1")
        network = [e["data"] for e in events if e["event"] == "network_request"]
        assert [(e["host"], e["path"], e["status"], e["refused"]) for e in network] == [
            ("127.0.0.1", "/first", 401, False),  # the API wants a token this run did not send
            ("localhost", "/second", 0, True),  # not in acme's allow-list
        ]
        assert all(e["step"] == 1 for e in network)
        assert "thinkbox admin network allow" in network[1]["reason"]
        types = [e["event"] for e in events]
        assert (
            types.index("code_started") < types.index("network_request") < types.index("execution_finished")
        )
        session_id = client.get(f"/v1/runs/{run['id']}").json()["session_id"]
        listed = client.get(f"/v1/sessions/{session_id}/network")
        assert listed.status_code == 200 and [r["path"] for r in listed.json()["requests"]] == [
            "/first",
            "/second",
        ]
    with running.client(running.carol) as other:  # another tenant's user sees nothing of it
        assert other.get(f"/v1/sessions/{session_id}/network").status_code == 404


def test_a_tools_tests_go_out_through_the_owners_proxy(running: Running) -> None:
    """A tool that calls an allowed API is tested as it will run: its test session has the owner's proxy
    (before, test sessions had no network and such a tool could never be saved)."""
    token = secrets.token_hex(8)
    source = (
        "import urllib.request, urllib.error\n\n"
        "def status(url):\n"
        '    """The HTTP status of a GET of url."""\n'
        "    try:\n"
        "        return urllib.request.urlopen(url, timeout=60).status\n"
        "    except urllib.error.HTTPError as e:\n"
        "        return e.code\n"
    )
    with EchoServer(token).running() as api, running.client(running.alice) as client:
        tests = f"def test_status():\n    assert status({api.url + '/ping'!r}) == 401\n"
        body = {"name": "http_status", "description": "status of a URL", "source": source, "tests": tests}
        refused = client.post("/v1/tools", json=body)  # 127.0.0.1 is not in acme's allow-list yet
        reached_before = len(api.received)
        rules.set_rule(running.db, "acme", "127.0.0.1", "allow")
        try:
            saved = client.post("/v1/tools", json=body)
        finally:
            rules.remove_rule(running.db, "acme", "127.0.0.1")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "tool_tests_failed"
    assert reached_before == 0  # the proxy refused it, as it would in a run
    assert saved.status_code == 201, saved.text
    assert [r["path"] for r in api.received] == ["/ping"]
