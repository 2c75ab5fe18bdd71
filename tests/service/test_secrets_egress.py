"""Secrets and the egress proxy together in the running service (SQLite and PostgreSQL): a user stores a
key once through the API; a run's code reads only a placeholder from its environment, calls a real API on
127.0.0.1 that wants the key and echoes it back (raw, base64, hex), and gets a 200; the API saw the real
key; the same placeholder sent to a second local API, not in the secret's hosts, is refused; and no form
of the key is in any stored byte of the run: the event stream, the run, the notebook, every row of every
table, every file under the data dir, the log records."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from thinkbox.service.db.models import Base
from thinkbox.service.egress import rules
from thinkbox.service.secrets.grant import PLACEHOLDER_PREFIX

from .conftest import Running
from .egress_support import EchoServer
from .service_support import make_account, program, read_sse
from .test_redact import assert_clean


def _calls(name: str, first: str, second: str) -> str:
    return (
        "import json, os, urllib.request, urllib.error\n"
        f"token = os.environ[{name!r}]\n"
        "print('placeholder', token.startswith('tbx-secret-'), len(token))\n"
        f"for url in ({first!r}, {second!r}):\n"
        "    request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})\n"
        "    try:\n"
        "        with urllib.request.urlopen(request, timeout=60) as answer:\n"
        "            echo = json.load(answer)\n"
        "            seen = echo['headers']['authorization'], echo['token_b64'], echo['token_hex']\n"
        "            print(answer.status, *seen)\n"
        "    except urllib.error.HTTPError as error:\n"
        "        print(error.code, error.read().decode()[:300])\n"
    )


def test_a_stored_key_reaches_only_its_api_and_no_stored_byte_holds_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    who = make_account(running.db, "acme", f"s{secrets.token_hex(4)}")
    name, value = f"API_{secrets.token_hex(3).upper()}", f"sk-live-{secrets.token_hex(12)}"
    with EchoServer(value).running() as api, EchoServer(value).running() as other:
        rules.set_rule(running.db, "acme", "127.0.0.1", "allow")
        try:
            with caplog.at_level(logging.DEBUG), running.client(who) as c:
                stored = c.put(
                    f"/v1/secrets/{name}",
                    json={"value": value, "hosts": [f"127.0.0.1:{api.port}"]},
                )
                assert stored.status_code == 201, stored.text
                assert value not in stored.text
                question = program([_calls(name, api.url + "/v1/me", other.url + "/v1/me")], "done")
                created = c.post("/v1/runs", json={"question": question})
                assert created.status_code == 201, created.text
                run_id = created.json()["id"]
                with c.stream("GET", f"/v1/runs/{run_id}/events") as response:
                    events = read_sse(response)
                sse = json.dumps(events).encode()
                run = c.get(f"/v1/runs/{run_id}").json()
                notebook = c.get(f"/v1/runs/{run_id}/notebook").content
                listed = c.get("/v1/secrets").json()
                c.delete(f"/v1/secrets/{name}")
        finally:
            rules.remove_rule(running.db, "acme", "127.0.0.1")
    assert run["status"] == "succeeded", run
    text = "".join(e["data"].get("text", "") for e in events if e["event"] == "output_chunk")
    # the code saw a placeholder, the API got the real key, the echo came back as the placeholder
    assert "placeholder True" in text and PLACEHOLDER_PREFIX in text, text[-3000:]
    assert "200 Bearer tbx-secret-" in text, text[-3000:]
    assert [r["authorization"] for r in api.received] == [f"Bearer {value}"]
    # the second API is allowed by the network rules but not by the secret's: refused, never reached
    assert other.received == [] and "403" in text, text[-3000:]
    network = [e["data"] for e in events if e["event"] == "network_request"]
    assert [(n["port"], n["refused"]) for n in network] == [(api.port, False), (other.port, True)], network
    assert network[0]["secrets"] == [name] and network[0]["status"] == 200, network
    assert any(s["name"] == name and s["last_used_at"] for s in listed["secrets"]), listed
    # no form of the value anywhere
    assert_clean(sse, value, "SSE")
    assert_clean(json.dumps(run), value, "run")
    assert_clean(notebook, value, "notebook")
    assert_clean(json.dumps(running.server.service.runs.events(run_id)), value, "events")
    with running.db.session() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                assert_clean(repr(tuple(row)), value, table.name)
    files = [p for p in Path(running.data_dir).rglob("*") if p.is_file() and not p.is_socket()]
    assert files
    for path in files:
        assert_clean(path.read_bytes(), value, str(path))
    assert_clean(caplog.text, value, "logs")
