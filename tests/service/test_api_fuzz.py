"""The OpenAPI schema, fuzzed with schemathesis against the running server, as a user of tenant ``acme``
while tenant ``globex`` has a run, a session and files: no 5xx, every response fits its own schema, and
nothing of the other tenant comes back (its ids and its file's contents never appear in a response).
Derandomized: every run tries the same inputs (a CI run must not fail on a draw no one can replay)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

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


def test_the_api_holds_under_fuzzing(running: Running, other_tenant: dict[str, str]) -> None:
    """Every operation of the served schema, with valid and invalid inputs (schemathesis strategies driven
    by hypothesis here: its pytest plugin does not load under this pytest)."""
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    try:
        for operation in operations:
            _fuzz(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), running, other_tenant)
            try:  # invalid inputs: impossible for an operation that takes none (GET /healthz)
                _fuzz(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), running, other_tenant)
            except Unsatisfiable:
                assert not list(operation.iter_parameters()) and not list(operation.body.items), (
                    operation.label
                )
    finally:  # the secrets the fuzzer stored would be redacted from the output of later tests' runs
        with running.client(running.alice) as alice:
            for secret in alice.get("/v1/secrets").json()["secrets"]:
                alice.delete(f"/v1/secrets/{secret['name']}", params={"scope": secret["scope"]})


def _fuzz(strategy: Any, running: Running, other_tenant: dict[str, str]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        _aim_at_the_other_tenant(case, other_tenant)
        response = case.call(base_url=running.url, headers=running.alice.headers, timeout=60)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
        if 200 <= response.status_code < 300:
            case.operation.validate_response(response)
        body = response.content
        for value in (SECRET, *other_tenant.values()):
            leaked = value.encode() in body and value not in case.formatted_path
            assert not leaked, (value, case.method, case.formatted_path, body[:500])
        if [v for v in other_tenant.values() if v in case.formatted_path]:
            assert response.status_code in (401, 404, 422), (
                case.formatted_path,
                response.status_code,
                body[:300],
            )

    check()


def _aim_at_the_other_tenant(case: Any, other_tenant: dict[str, str]) -> None:
    """Half the generated ids are replaced by the other tenant's real ones."""
    for name in case.path_parameters or {}:
        if name == "run_id" and len(str(case.body)) % 2:
            case.path_parameters[name] = other_tenant["run"]
        elif name == "session_id" and len(str(case.query)) % 2:
            case.path_parameters[name] = other_tenant["session"]
