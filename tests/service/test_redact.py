"""Redaction of secret values: every form (raw, base64 at each alignment, URL-safe base64, URL-encoded, hex)
becomes ``[secret NAME]``; a value split over output chunks too; log records. Then for real: a user with a
secret runs code that prints the value raw, base64'd, hex'd and URL-encoded, displays it, raises it and
leaves it in a variable, through a run and a session of the real service (SQLite and PostgreSQL), and every
stored byte of the run (database rows, every file under the data dir), the SSE streams, the notebook, the
OpenAI-compatible stream, MCP's answers and the log records show ``[secret NAME]`` and never the value."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client
from openai import OpenAI
from sqlalchemy import select

from thinkbox.agent.events import FinalAnswer
from thinkbox.sandbox.types import DisplayData, ExecutionError, ExecutionResult, OutputChunk
from thinkbox.service.db import Database
from thinkbox.service.db.models import Base, Run, Tenant, User
from thinkbox.service.journal import Journal, stored_records
from thinkbox.service.secrets.grant import forms
from thinkbox.service.secrets.redact import LOGS, Redactor, SessionRedaction, StreamRedaction

from .conftest import Running
from .service_support import Account, make_account, program, read_sse

VALUE = "sk+live/9f8e7d6c5b4a=Zq&x y"


def every_form(value: str) -> list[str]:
    """The value as code would print it, each way (independently of :func:`forms`)."""
    raw = value.encode()
    out = [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(value)[1:-1].replace("/", "\\/"),  # in a JSON string, as PHP writes it
    ]
    for prefix in (b"a", b"ab"):  # the value at the other two alignments inside a longer base64 text
        out.append(base64.b64encode(prefix + raw + b"tail").decode())
        out.append(base64.urlsafe_b64encode(prefix + raw + b"tail").decode())
    return out


@pytest.mark.parametrize("shown", every_form(VALUE))
def test_every_form_of_a_value_is_redacted(shown: str) -> None:
    redactor = Redactor({"API_KEY": VALUE})
    out = redactor.text(f"before {shown} after")
    assert "[secret API_KEY]" in out
    for form in forms(VALUE):
        assert form not in out, (form, out)
    assert VALUE not in out and VALUE.encode().hex() not in out.lower()


def test_text_without_a_value_is_unchanged_and_an_empty_redactor_does_nothing() -> None:
    redactor = Redactor({"API_KEY": VALUE})
    assert redactor.text("nothing to see: sk+live/ 9f8e") == "nothing to see: sk+live/ 9f8e"
    assert not Redactor() and Redactor().text(VALUE) == VALUE
    two = Redactor({"A_KEY": VALUE, "B_KEY": "another-value-42"})
    assert two.text(f"{VALUE} another-value-42") == "[secret A_KEY] [secret B_KEY]"


def test_a_value_split_over_chunks_is_redacted_at_every_split() -> None:
    redactor = Redactor({"API_KEY": VALUE})
    text = f"one {VALUE} two {VALUE.encode().hex()} three\n"
    whole = redactor.text(text)
    assert whole == "one [secret API_KEY] two [secret API_KEY] three\n"
    for cut in range(1, len(text)):
        stream = StreamRedaction(redactor)
        parts = [stream.feed(text[:cut]), stream.feed(text[cut:]), stream.flush()]
        assert "".join(parts) == whole, cut
        for part in parts:
            assert VALUE[:6] not in part or "[secret" in part, (cut, parts)
    for size in (1, 3, 7):
        stream = StreamRedaction(redactor)
        out = "".join(stream.feed(text[i : i + size]) for i in range(0, len(text), size)) + stream.flush()
        assert out == whole


def test_only_what_could_start_a_value_is_held_back() -> None:
    stream = StreamRedaction(Redactor({"API_KEY": VALUE}))
    assert stream.feed("progress 10%\n") == "progress 10%\n"
    assert stream.feed("key: sk+li") == "key: "
    assert stream.feed("ve/ is not it\n") == "sk+live/ is not it\n"


def test_the_session_filter_redacts_chunks_displays_and_the_result() -> None:
    redaction = SessionRedaction(lambda: Redactor({"API_KEY": VALUE}))
    rewrite = redaction.stream()
    out = [
        *rewrite(OutputChunk(name="stdout", text="a " + VALUE[:5])),
        *rewrite(DisplayData(mime={"text/html": f"<b>{VALUE}</b>", "text/plain": "x"})),
        *rewrite(
            ExecutionResult(
                stdout="a " + VALUE,
                result=repr(VALUE),
                error=ExecutionError(type="ValueError", message=VALUE, traceback=f"line 1\n{VALUE}"),
            )
        ),
    ]
    dumped = json.dumps([item.model_dump() for item in out])
    assert VALUE not in dumped and dumped.count("[secret API_KEY]") == 5, dumped
    chunks = [item.text for item in out if isinstance(item, OutputChunk)]
    assert chunks == ["a ", VALUE[:5]]  # held back until the result: it never became the value


def test_log_records_are_redacted_message_arguments_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def source() -> Redactor:
        return Redactor({"API_KEY": VALUE})

    LOGS.add(source)
    try:
        log = logging.getLogger("thinkbox.test.redact")
        with caplog.at_level(logging.INFO, logger="thinkbox.test.redact"):
            log.info("token %s sent to %s", VALUE, "api.example.com")
            log.warning(f"inline {VALUE.encode().hex()}")
            try:
                raise ValueError(f"bad {VALUE}")
            except ValueError:
                log.exception("failed")
    finally:
        LOGS.remove(source)
    mine = [r for r in caplog.records if r.name == "thinkbox.test.redact"]
    assert len(mine) == 3
    assert mine[0].args == ("[secret API_KEY]", "api.example.com")
    text = "\n".join(caplog.handler.format(r) for r in mine)
    assert text.count("[secret API_KEY]") == 3, text
    assert VALUE not in text and VALUE.encode().hex() not in text


async def test_the_journal_redacts_every_event_and_the_run_row(database: Database) -> None:
    """What the model writes (its answer, an error) is redacted as it is journaled, whatever the session
    did: the database holds and the followers get ``[secret NAME]`` only."""
    with database.session() as s:
        tenant = Tenant(name="acme")
        s.add(tenant)
        s.flush()
        user = User(tenant_id=tenant.id, name="alice")
        s.add(user)
        s.flush()
        run = Run(user_id=user.id, tenant_id=tenant.id, question="?", status="running")
        s.add(run)
        s.commit()
    journal = Journal(database)
    journal.start()
    try:
        journal.open_run(run.id, 0, lambda: Redactor({"API_KEY": VALUE}))
        answer = FinalAnswer(answer=f"it is {VALUE}", steps=1, duration_s=0.1, tokens=3)
        journal.append(run.id, answer, answer=answer.answer)
        journal.update_run(run.id, error=f"failed near {base64.b64encode(VALUE.encode()).decode()}")
        await journal.flush()
    finally:
        await journal.aclose()
    records = stored_records(database, run.id)
    assert [json.loads(r.data)["answer"] for r in records] == ["it is [secret API_KEY]"]
    with database.session() as s:
        row = s.get(Run, run.id)
        assert row is not None and row.answer == "it is [secret API_KEY]"
        assert row.error == "failed near [secret API_KEY]"


# -- the real service ------------------------------------------------------------------------------------


@pytest.fixture
def holder(running: Running) -> Iterator[tuple[Account, str, str]]:
    """A new user of acme with the secret NAME = value; (the user, the name, the value)."""
    who = make_account(running.db, "acme", f"r{secrets.token_hex(4)}")
    name, value = f"KEY_{secrets.token_hex(3).upper()}", f"sk+live/{secrets.token_hex(10)}=Zq"
    with running.client(who) as c:
        assert c.put(f"/v1/secrets/{name}", json={"value": value, "hosts": ["127.0.0.1"]}).status_code == 201
    yield who, name, value
    with running.client(who) as c:
        c.delete(f"/v1/secrets/{name}")


def leaking_code(value: str) -> list[str]:
    """Code that rebuilds the value (its text never holds it) and shows it every way it can."""
    hidden = value[::-1]
    return [
        f"import base64, sys, time, urllib.parse\nv = {hidden!r}[::-1]\n"
        "print('raw', v)\nprint('b64', base64.b64encode(v.encode()).decode())\n"
        "print('hex', v.encode().hex())\nprint('url', urllib.parse.quote(v))\n"
        "sys.stdout.write('split ' + v[:7]); sys.stdout.flush(); time.sleep(0.3); print(v[7:])\n"
        "class Show:\n    def _repr_html_(self):\n        return '<b>' + v + '</b>'\n"
        "display(Show())\nv",
        "raise ValueError('rejected ' + v)",
    ]


def assert_clean(data: bytes | str, value: str, where: str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for form in forms(value):
        assert form.encode() not in blob, (where, form)


def test_a_run_stores_and_streams_no_form_of_a_secret(
    running: Running, holder: tuple[Account, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    who, name, value = holder
    marker = f"[secret {name}]".encode()
    with caplog.at_level(logging.DEBUG), running.client(who) as c:
        question = program(leaking_code(value), f"the key was {value}")
        created = c.post("/v1/runs", json={"question": question})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        with c.stream("GET", f"/v1/runs/{run_id}/events") as response:
            sse = b"".join(response.iter_bytes())
        run = c.get(f"/v1/runs/{run_id}").json()
        notebook = c.get(f"/v1/runs/{run_id}/notebook").content
        logging.getLogger("thinkbox.service.runs").warning("run %s printed %s", run_id, value)
    assert run["status"] == "succeeded", run
    # what it checks is there to see: the output, the display, the error, the answer and the question
    assert sse.count(marker) >= 8 and b"rejected [secret" in sse and b"<b>[secret" in sse, sse[-3000:]
    assert run["answer"] == f"the key was [secret {name}]" and marker in notebook
    assert_clean(sse, value, "SSE")
    assert_clean(json.dumps(run), value, "run")
    assert_clean(notebook, value, "notebook")
    events = running.server.service.runs.events(run_id)
    assert any(e["type"] == "execution_finished" for e in events)
    assert_clean(json.dumps(events), value, "events")
    # every stored byte: every row of every table, every file under the data dir, the log records
    with running.db.session() as s:
        rows = 0
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                rows += 1
                assert_clean(repr(tuple(row)), value, table.name)
    assert rows > 10
    files = [p for p in Path(running.data_dir).rglob("*") if p.is_file()]
    assert files and any(p.name.startswith("thinkbox.db") for p in files) == (running.db.dialect == "sqlite")
    for path in files:
        assert_clean(path.read_bytes(), value, str(path))
    assert caplog.records and marker.decode() in caplog.text
    assert_clean(caplog.text, value, "logs")


def test_a_session_streams_and_lists_no_form_of_a_secret(
    running: Running, holder: tuple[Account, str, str]
) -> None:
    who, name, value = holder
    with running.client(who) as c:
        sid = c.post("/v1/sessions").json()["id"]
        try:
            code = leaking_code(value)[0]
            headers = {"Accept": "text/event-stream"}
            with c.stream(
                "POST", f"/v1/sessions/{sid}/execute", json={"code": code}, headers=headers
            ) as response:
                events = read_sse(response)
            streamed = "".join(e["data"]["text"] for e in events if e["event"] == "stdout")
            assert f"split [secret {name}]\n" in streamed, streamed
            assert [e["event"] for e in events].count("display") == 1
            plain = c.post(f"/v1/sessions/{sid}/execute", json={"code": "print(v); v"}).json()
            variables = c.get(f"/v1/sessions/{sid}/variables").text
        finally:
            c.delete(f"/v1/sessions/{sid}")
    assert plain["stdout"] == f"[secret {name}]\n" and plain["result"] == f"'[secret {name}]'"
    assert f"[secret {name}]" in variables
    for data in (json.dumps(events), json.dumps(plain), variables):
        assert_clean(data, value, "session")


def test_the_openai_compatible_stream_holds_no_form_of_a_secret(
    running: Running, holder: tuple[Account, str, str]
) -> None:
    who, name, value = holder
    ai = OpenAI(base_url=running.url + "/v1", api_key=who.key, max_retries=0, timeout=120)
    question = program(leaking_code(value)[:1], f"the key was {value}")
    chunks = list(
        ai.chat.completions.create(
            model="thinkbox", messages=[{"role": "user", "content": question}], stream=True
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert f"raw [secret {name}]" in reasoning and content == f"the key was [secret {name}]", reasoning
    assert_clean(json.dumps([c.model_dump() for c in chunks]), value, "openai stream")


async def test_mcp_run_code_and_ask_hold_no_form_of_a_secret(
    running: Running, holder: tuple[Account, str, str]
) -> None:
    who, name, value = holder
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {who.key}"}, timeout=120) as http,
        McpClient(streamable_http_client(f"{running.url}/mcp", http_client=http)) as client,
    ):
        created = await client.call_tool("create_session", {})
        sid = created.structured_content["session_id"]
        ran = await client.call_tool("run_code", {"session_id": sid, "code": leaking_code(value)[0]})
        await client.call_tool("close_session", {"session_id": sid})
        asked = await client.call_tool("ask", {"question": program(leaking_code(value), "done")})
    for result in (ran, asked):
        dumped = result.model_dump_json()
        assert f"[secret {name}]" in dumped, dumped[:2000]
        assert_clean(dumped, value, "mcp")
