"""A run's ``route`` field through the real HTTP API (SQLite and PostgreSQL)."""

from __future__ import annotations

from .conftest import Running
from .service_support import program
from .test_api_runs import events_of, submit


def test_a_run_with_route_direct_answers_in_one_call_and_says_so(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["print(1)"], "1"), route="direct")
        events = events_of(client, run["id"])
        types = [e["event"] for e in events]
        assert types == ["run_started", "route_chosen", "final_answer", "run_finished"]
        assert events[1]["data"]["route"] == "direct" and events[1]["data"]["reason"]
        info = client.get(f"/v1/runs/{run['id']}").json()
        assert info["status"] == "succeeded" and info["steps"] == 1 and info["answer"]


def test_a_run_without_route_takes_the_services_default_code_route(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["print(6 * 7)"], "42"))
        events = events_of(client, run["id"])
        chosen = [e["data"] for e in events if e["event"] == "route_chosen"]
        assert [c["route"] for c in chosen] == ["code"]
        assert any(e["event"] == "code_started" for e in events)


def test_an_unknown_route_is_refused_naming_the_field(running: Running) -> None:
    with running.client(running.alice) as client:
        response = client.post("/v1/runs", json={"question": "q", "route": "sometimes"})
        assert response.status_code in (400, 422), response.text
        assert "route" in response.text
