"""Runs through the real HTTP API: submit, follow over SSE (resumable, exactly once), follow-ups in one
session, cancel, notebook, limits, other users' and tenants' ids, bad input. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

from .conftest import Running
from .service_support import QuestionModel, ThreadServer, make_account, program, read_sse, service_settings


def events_of(client: httpx.Client, run_id: str, **params: Any) -> list[dict[str, Any]]:
    with client.stream("GET", f"/v1/runs/{run_id}/events", params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_sse(response)


def submit(client: httpx.Client, question: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/runs", json={"question": question, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_run_answers_and_streams_every_event_once(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["x = 6", "print(x * 7)"], "42"))
        assert run["status"] == "queued" and run["id"].startswith("r_")
        events = events_of(client, run["id"])
        ids = [e["id"] for e in events]
        assert ids == list(range(1, len(ids) + 1))
        types = [e["event"] for e in events]
        assert types[0] == "run_started" and types[-1] == "run_finished"
        assert types.count("execution_finished") == 2
        assert all(e["data"]["type"] == e["event"] for e in events)
        outputs = [e["data"]["text"] for e in events if e["event"] == "output_chunk"]
        assert "".join(outputs).strip() == "42"
        info = client.get(f"/v1/runs/{run['id']}").json()
        assert info["status"] == "succeeded" and info["answer"] == "42"
        assert info["steps"] == 3 and info["tokens"] > 0 and info["events"] == len(events)
        assert info["duration_s"] is not None and info["session_id"].startswith("s_")


def test_characters_that_line_splitters_break_at_do_not_cut_an_event(running: Running) -> None:
    # httpx's iter_lines (the thinkbox client's, and read_sse's) splits at U+0085, U+2028 and U+2029 too
    odd = "a\u2028b\u2029c\x85d"
    with running.client(running.alice) as client:
        run = submit(client, program([f"print({odd!r})"], odd))
        events = events_of(client, run["id"])
        outputs = "".join(e["data"]["text"] for e in events if e["event"] == "output_chunk")
        assert outputs == odd + "\n" and events[-1]["data"]["answer"] == odd
        sid = client.post("/v1/sessions").json()["id"]
        with client.stream(
            "POST",
            f"/v1/sessions/{sid}/execute",
            json={"code": f"print({odd!r})"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            streamed = read_sse(response)
        assert streamed[-1]["data"]["stdout"] == odd + "\n"


def test_resuming_the_stream_after_an_event_id_gives_the_rest_exactly(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["print(1)", "print(2)"], "done"))
        everything = events_of(client, run["id"])
        for cut in (1, 5, len(everything) - 1, len(everything)):
            by_query = events_of(client, run["id"], after=cut)
            assert [e["id"] for e in by_query] == list(range(cut + 1, len(everything) + 1))
            with client.stream(
                "GET", f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(cut)}
            ) as response:
                assert [e["id"] for e in read_sse(response)] == [e["id"] for e in by_query]
        bad = client.get(f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]


def test_a_follow_up_continues_the_session_state(running: Running) -> None:
    with running.client(running.alice) as client:
        first = submit(client, program(["secret = 6 * 7"], "stored"))
        events_of(client, first["id"])
        session_id = client.get(f"/v1/runs/{first['id']}").json()["session_id"]
        second = submit(client, program(["print(secret + 1)"], "43"), session_id=session_id)
        events = events_of(client, second["id"])
        out = "".join(e["data"]["text"] for e in events if e["event"] == "output_chunk")
        assert out.strip() == "43"
        assert client.get(f"/v1/runs/{second['id']}").json()["session_id"] == session_id


def test_cancel_stops_a_running_run_and_refuses_a_finished_one(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["import time; time.sleep(30)"], "never"))
        deadline = time.monotonic() + 20
        while client.get(f"/v1/runs/{run['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelled = client.post(f"/v1/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        events = events_of(client, run["id"])
        assert events[-1]["event"] == "run_finished" and events[-1]["data"]["status"] == "cancelled"
        assert events[-2]["event"] == "run_error" and events[-2]["data"]["code"] == "cancelled"
        again = client.post(f"/v1/runs/{run['id']}/cancel")
        assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]


def test_runs_are_listed_newest_first_paginated_and_searchable(running: Running) -> None:
    with running.client(running.bob) as client:
        ids = []
        for n in range(3):
            ids.append(submit(client, program([f"print({n})"], f"list-{n}"))["id"])
            events_of(client, ids[-1])
        page = client.get("/v1/runs", params={"limit": 2}).json()
        assert [r["id"] for r in page["runs"]] == ids[::-1][:2] and page["next_offset"] == 2
        found = client.get("/v1/runs", params={"q": "list-1"}).json()["runs"]
        assert [r["id"] for r in found] == [ids[1]]


def test_the_notebook_of_a_run(running: Running) -> None:
    with running.client(running.alice) as client:
        run = submit(client, program(["print('hello')"], "hi"))
        events_of(client, run["id"])
        response = client.get(f"/v1/runs/{run['id']}/notebook")
        assert response.status_code == 200
        notebook = nbformat.reads(response.text, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code and code[0].source == "print('hello')"


def test_another_users_or_tenants_run_is_not_found(running: Running) -> None:
    with running.client(running.alice) as alice:
        run = submit(alice, program(["print(1)"], "mine"))
        events_of(alice, run["id"])
    for who in (running.bob, running.carol):
        with running.client(who) as other:
            for method, path in (
                ("GET", f"/v1/runs/{run['id']}"),
                ("GET", f"/v1/runs/{run['id']}/events"),
                ("GET", f"/v1/runs/{run['id']}/notebook"),
                ("POST", f"/v1/runs/{run['id']}/cancel"),
            ):
                response = other.request(method, path)
                assert response.status_code == 404, (method, path, response.text)
                assert run["id"] in response.json()["error"]["message"]
            assert run["id"] not in other.get("/v1/runs").text


@pytest.mark.parametrize(
    ("headers", "needle"),
    [({}, "missing API key"), ({"Authorization": "Bearer tbx_nope"}, "invalid or revoked")],
)
def test_requests_without_a_valid_key_are_refused(
    running: Running, headers: dict[str, str], needle: str
) -> None:
    response = httpx.get(running.url + "/v1/runs", headers=headers)
    assert response.status_code == 401 and needle in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(running.url + "/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 422, "body: invalid json at character 1: expecting property name"),
        (b'{"question": "caf\xe9"}', 400, "the body cannot be read as json: it is not utf-8"),
        (b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nested too deeply"),
        (json.dumps({"question": "hi", "colour": "red"}).encode(), 422, "colour"),
        (json.dumps({"question": ""}).encode(), 422, "question"),
        (json.dumps({"question": "x" * 50_001}).encode(), 422, "question"),
        (
            json.dumps({"question": "hi", "session_id": "s_0000000000000000"}).encode(),
            404,
            "s_0000000000000000",
        ),
        (json.dumps({"question": "hi", "files": ["missing.csv"]}).encode(), 404, "missing.csv"),
        (json.dumps({"question": "a\u0000b"}).encode(), 400, "nul character"),
        (b'{"question": "a \\ud800 b"}', 422, "unicode string"),  # valid JSON, not Unicode text
        (json.dumps({"question": "hi", "session_id": "s_\u0000"}).encode(), 404, "s_"),
    ],
)
def test_bad_run_requests_get_a_clear_4xx(running: Running, body: bytes, status: int, needle: str) -> None:
    with running.client(running.alice) as client:
        before = client.get("/v1/runs", params={"limit": 200}).json()["runs"]
        response = client.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]["message"].lower() or needle in response.text
        assert client.get("/v1/runs", params={"limit": 200}).json()["runs"] == before


def test_run_limits_answer_429_with_retry_after(running: Running) -> None:
    with running.client(running.bob) as client:
        started = [submit(client, program(["import time; time.sleep(20)"], "slow")) for _ in range(6)]
        refused = client.post("/v1/runs", json={"question": "one more"})
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "service.runs_per_user" in refused.json()["error"]["message"]
        for run in started:
            client.post(f"/v1/runs/{run['id']}/cancel")


def test_a_follow_up_cancelled_while_queued_frees_its_session(tmp_path: Path) -> None:
    server = ThreadServer(service_settings(tmp_path, active_runs=1), QuestionModel()).start()
    try:
        who = make_account(server.service.db, "acme", "frank")
        with httpx.Client(base_url=server.url, headers=who.headers, timeout=60) as client:
            first = submit(client, program(["v = 1"], "set"))
            events_of(client, first["id"])
            session_id = client.get(f"/v1/runs/{first['id']}").json()["session_id"]
            blocker = submit(client, program(["import time; time.sleep(30)"], "slow"))  # holds the one slot
            queued = submit(client, program(["print(v)"], "1"), session_id=session_id)
            assert client.get(f"/v1/runs/{queued['id']}").json()["status"] == "queued"
            assert client.post(f"/v1/runs/{queued['id']}/cancel").json()["status"] == "cancelled"
            client.post(f"/v1/runs/{blocker['id']}/cancel")
            again = submit(client, program(["print(v + 1)"], "2"), session_id=session_id)
            printed = "".join(
                e["data"]["text"] for e in events_of(client, again["id"]) if e["event"] == "output_chunk"
            )
            assert printed.strip() == "2"
    finally:
        server.stop()


def test_a_body_over_the_limit_is_refused_413_with_or_without_a_key_declared_or_chunked(
    running: Running,
) -> None:
    """FastAPI reads a JSON body before the key is checked: without the limit a client with no key could
    make the server hold any number of bytes (and it answered 401 or 422 only after reading them all)."""
    from thinkbox.service.api.app import MAX_BODY_BYTES

    body = b'{"question": "' + b"x" * MAX_BODY_BYTES + b'"}'
    chunks = [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    with running.client(running.alice) as alice:
        for response in (
            httpx.post(f"{running.url}/v1/runs", content=body, timeout=120),
            alice.post("/v1/runs", content=body),
            alice.post("/v1/runs", content=iter(chunks)),  # no Content-Length
        ):
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["code"] == "too_large" and f"over {MAX_BODY_BYTES:,} bytes" in error["message"]
        upload = alice.put("/v1/files/over-the-json-limit.bin", content=b"x" * (MAX_BODY_BYTES + 1))
        assert upload.status_code == 201, upload.text  # files have their own limit, service.max_upload_mib
        assert alice.delete("/v1/files/over-the-json-limit.bin").status_code == 204


def test_a_path_or_a_method_the_api_does_not_have_is_named(running: Running) -> None:
    """Not a bare 'Not Found' (which reads like a missing run) or 'Method Not Allowed'."""
    with running.client(running.alice) as client:
        response = client.get("/v1/run/r_0000000000000000")
        assert response.status_code == 404
        assert (
            response.json()["error"]["message"]
            == "the API has no /v1/run/r_0000000000000000: see /docs for its endpoints"
        )
        response = client.get("/v1/runs/r_0000000000000000/cancel")
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert (
            response.json()["error"]["message"]
            == "GET is not allowed on /v1/runs/r_0000000000000000/cancel: use POST"
        )


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_a_body_sent_without_the_json_content_type_says_so(
    running: Running, content_type: str | None
) -> None:
    """curl -d sends a form's Content-Type: the answer was only 'Input should be a valid dictionary'."""
    headers = {"Content-Type": content_type} if content_type else {}
    with running.client(running.alice) as client:
        response = client.post("/v1/runs", content=b'{"question": "hi"}', headers=headers)
    assert response.status_code == 422
    said = f"as {content_type}" if content_type else "without a Content-Type"
    assert f"(the body came {said}: send JSON with Content-Type: application/json)" in response.text
