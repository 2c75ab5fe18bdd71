"""A run's ``route`` field through the real HTTP API (SQLite and PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from thinkbox.config import SearchSettings

from .conftest import Running
from .service_support import QuestionModel, ThreadServer, make_account, program, service_settings
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


def test_a_service_run_searches_the_web_from_the_host_and_keeps_its_tools_hook(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
    from search_server import canned_search

    with canned_search() as search:
        settings = service_settings(tmp_path / "svc").model_copy(
            update={"search": SearchSettings(provider="searxng", url=search.url)}
        )
        server = ThreadServer(settings, QuestionModel()).start()
        try:
            who = make_account(server.service.db, "acme", "erin")
            with httpx.Client(base_url=server.url, headers=who.headers, timeout=60) as client:
                run = submit(client, program(['web_search("capital of France")'], "Paris"), route="code")
                events = events_of(client, run["id"])
        finally:
            server.stop()
        assert [s.query["q"] for s in search.seen] == [["capital of France"]]
    (finished,) = [e["data"] for e in events if e["event"] == "execution_finished"]
    assert "https://en.wikipedia.org/wiki/Paris" in finished["observation"]
    assert events[-1]["data"]["status"] == "answered"
