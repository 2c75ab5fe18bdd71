"""The OpenAPI schema, fuzzed with schemathesis against the running server, as a user of tenant ``acme``
while tenant ``globex`` has a run, a session and files: no 5xx, every response fits its own schema, and
nothing of the other tenant comes back (its ids and its file's contents never appear in a response)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from .conftest import Running
from .service_support import program, read_sse

SECRET = "globex-confidential-7f3a"


@pytest.fixture(scope="session")
def other_tenant(running: Running) -> dict[str, str]:
    """What globex (carol) owns: a finished run, a live session, a file with a marker."""
    with running.client(running.carol) as carol:
        run = carol.post("/v1/runs", json={"question": program([f"print('{SECRET}')"], SECRET)}).json()
        with carol.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            read_sse(response)
        session = carol.post("/v1/sessions").json()
        assert carol.put("/v1/files/secret.txt", content=SECRET.encode()).status_code == 201
        assert carol.put(
            "/v1/files/shared.txt", params={"scope": "tenant"}, content=SECRET.encode()
        ).is_success
    run_session = httpx.get(f"{running.url}/v1/runs/{run['id']}", headers=running.carol.headers).json()
    return {"run": run["id"], "session": session["id"], "run_session": run_session["session_id"]}


@pytest.fixture(scope="session")
def api_schema(running: Running) -> Any:
    return schemathesis.openapi.from_url(f"{running.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_under_fuzzing(case: Any, running: Running, other_tenant: dict[str, str]) -> None:
    if "{" in case.path and case.path_parameters:  # half the time, aim at the other tenant's ids
        for name in case.path_parameters:
            if name == "run_id" and len(str(case.body)) % 2:
                case.path_parameters[name] = other_tenant["run"]
            elif name == "session_id" and len(str(case.query)) % 2:
                case.path_parameters[name] = other_tenant["session"]
    response = case.call(base_url=running.url, headers=running.alice.headers, timeout=60)
    case.validate_response(response)
    assert response.status_code < 500, response.text
    body = response.content
    for value in (SECRET, *other_tenant.values()):
        assert value.encode() not in body or value in case.formatted_path, (value, case.path, body[:500])
    if value_in_path := [v for v in other_tenant.values() if v in case.formatted_path]:
        assert response.status_code == 404, (value_in_path, response.status_code, body[:300])
