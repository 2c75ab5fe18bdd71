"""thinkbox.client against a real server (uvicorn on a loopback port, real sandboxes, SQLite): runs end to
end with typed events, a stream broken mid-run that resumes by itself without duplicates, sessions, files,
errors from the service's answers, an unreachable URL; the blocking and the asyncio client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from thinkbox.agent.events import Event, ExecutionFinished, FinalAnswer, OutputChunk, RunFinished, RunStarted
from thinkbox.client import ApiError, AsyncClient, Client, ServiceUnreachable
from thinkbox.errors import ConfigError
from thinkbox.sandbox.types import OutputChunk as StreamChunk
from thinkbox.service.api.schemas import ExecuteResponse

from .service_support import (
    Account,
    QuestionModel,
    ThreadServer,
    free_port,
    make_account,
    program,
    service_settings,
)

CUT_AFTER = 3
"""A broken stream ends after this many whole events and half of the next."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    data_dir = tmp_path_factory.mktemp("client")
    settings = service_settings(data_dir, None, runs_per_user=2, runs_per_tenant=8)
    running = ThreadServer(settings, QuestionModel()).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def alice(server: ThreadServer) -> Account:
    return make_account(server.service.db, "acme", "alice")


@pytest.fixture(scope="module")
def carol(server: ThreadServer) -> Account:
    return make_account(server.service.db, "globex", "carol")


@pytest.fixture
def client(server: ThreadServer, alice: Account) -> Iterator[Client]:
    with Client(server.url, alice.key) as c:
        yield c


def _output(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, OutputChunk))


# -- a network blip: the first event stream of a run breaks after a few events ------------------------
def _cut(data: bytes, state: dict[str, int]) -> tuple[bytes, bool]:
    """``data`` up to the middle of event CUT_AFTER + 1 (counting across chunks); True when it is cut."""
    out = bytearray()
    for byte in data:
        out.append(byte)
        if out.endswith(b"\n\n"):
            state["events"] += 1
        if state["events"] == CUT_AFTER and out.endswith(b"event:"):
            return bytes(out), True
    return bytes(out), False


class _Cutting(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner, self.state = inner, {"events": 0}

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            part, cut = _cut(chunk, self.state)
            yield part
            if cut:
                raise httpx.ReadError("connection reset (a blip the test made)")

    def close(self) -> None:
        self.inner.close()


class _AsyncCutting(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner, self.state = inner, {"events": 0}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            part, cut = _cut(chunk, self.state)
            yield part
            if cut:
                raise httpx.ReadError("connection reset (a blip the test made)")

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_first_stream(request: httpx.Request, seen: list[httpx.Request]) -> bool:
    if not request.url.path.endswith("/events"):
        return False
    seen.append(request)
    return len(seen) == 1


class BlipTransport(httpx.HTTPTransport):
    """Breaks the first event stream mid-event; records every event-stream request."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not _is_first_stream(request, self.streams):
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_Cutting(response.stream))  # fmt: skip


class AsyncBlipTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.streams: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not _is_first_stream(request, self.streams):
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_AsyncCutting(response.stream))  # fmt: skip


# -- runs -------------------------------------------------------------------------------------------------
def test_ask_runs_to_the_answer_and_every_event_is_typed_and_counted(client: Client) -> None:
    events: list[Event] = []
    run = client.ask(program(["x = 6", "print(x * 7)"], "42"), on_event=events.append)
    assert run.status == "succeeded" and run.answer == "42" and run.steps == 3
    assert isinstance(events[0], RunStarted) and events[0].run_id == run.id
    assert isinstance(events[-2], FinalAnswer) and isinstance(events[-1], RunFinished)
    assert sum(isinstance(e, ExecutionFinished) for e in events) == 2
    assert len(events) == run.events and _output(events).strip() == "42"
    assert client.notebook(run.id)["nbformat"] == 4


def test_events_after_an_id_are_the_rest_exactly(client: Client) -> None:
    created = client.create_run(program(["print(1)", "print(2)"], "done"))
    assert created.status == "queued"
    everything = list(client.run_events(created.id))
    rest = client.run_events(created.id, after=4)
    assert [e.model_dump() for e in rest] == [e.model_dump() for e in everything[4:]]
    assert rest.last_id == len(everything) and rest.reconnects == 0 and rest.duplicates == 0


def test_a_stream_broken_mid_event_resumes_from_the_last_id_without_duplicates(
    server: ThreadServer, alice: Account
) -> None:
    transport = BlipTransport()
    with Client(server.url, alice.key, transport=transport) as client:
        created = client.create_run(program(["print('a')", "print('b')", "print('c')"], "abc"))
        stream = client.run_events(created.id)
        events = list(stream)
        info = client.get_run(created.id)
    assert stream.reconnects == 1 and stream.duplicates == 0 and stream.missing == 0
    assert [r.headers.get("Last-Event-ID") for r in transport.streams] == [None, str(CUT_AFTER)]
    assert len(events) == info.events == stream.last_id
    assert isinstance(events[-1], RunFinished) and events[-1].answer == "abc"
    assert _output(events) == "a\nb\nc\n"


def test_runs_are_listed_newest_first_and_searchable(client: Client) -> None:
    first = client.ask(program([], "first of the list test"))
    second = client.ask(program([], "second of the list test"))
    page = client.list_runs(limit=1, q="of the list test")
    assert [r.id for r in page.runs] == [second.id] and page.next_offset == 1
    assert [r.id for r in client.list_runs(limit=5, offset=1, q="of the list test").runs] == [first.id]


def test_too_many_runs_is_an_api_error_with_retry_after(client: Client) -> None:
    slow = program(["import time; time.sleep(20)"], "late")
    running = [client.create_run(slow).id for _ in range(2)]
    try:
        with pytest.raises(ApiError) as info:
            client.create_run(slow)
        assert info.value.status == 429 and info.value.code == "too_many_runs"
        assert info.value.retry_after is not None and info.value.retry_after > 0 and info.value.retryable
    finally:
        for run_id in running:
            client.cancel_run(run_id)
    assert {client.get_run(r).status for r in running} == {"cancelled"}


# -- sessions ---------------------------------------------------------------------------------------------
def test_a_session_keeps_state_and_streams_its_output(client: Client) -> None:
    session_id = client.create_session()
    assert client.execute(session_id, "x = 41").error is None
    assert client.execute(session_id, "x + 1").result == "42"
    failed = client.execute(session_id, "1 / 0")
    assert failed.error is not None and failed.error.type == "ZeroDivisionError"
    items = list(
        client.execute_stream(session_id, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n7")
    )
    chunks = [(i.name, i.text) for i in items if isinstance(i, StreamChunk)]
    assert chunks == [("stdout", "out\n"), ("stderr", "err\n")]
    assert isinstance(items[-1], ExecuteResponse) and items[-1].result == "7"
    assert session_id in [s.id for s in client.list_sessions()]
    assert client.get_session(session_id).live
    client.close_session(session_id)
    assert not client.get_session(session_id).live
    with pytest.raises(ApiError) as info:
        client.execute(session_id, "x")
    assert info.value.status in (404, 410)


# -- files ------------------------------------------------------------------------------------------------
def test_files_go_up_come_down_are_listed_and_deleted(client: Client, tmp_path: Path) -> None:
    entry = client.upload("notes/a b#1.txt", b"hello")
    assert entry.path == "notes/a b#1.txt" and entry.size == 5 and not entry.is_dir
    assert client.download("notes/a b#1.txt") == b"hello"
    client.upload("data.txt", io.BytesIO(b"6 7\n"))
    listing = client.list_files()
    assert listing.scope == "user" and {"notes/a b#1.txt", "data.txt"} <= {f.path for f in listing.files}
    assert listing.used_bytes >= 9 and listing.quota_bytes > 0
    client.upload("shared.txt", b"team", scope="tenant")
    assert "shared.txt" in {f.path for f in client.list_files(scope="tenant").files}
    assert client.download("shared.txt", scope="tenant") == b"team"
    events: list[Event] = []
    code = "a, b = map(int, open('data.txt').read().split())\nprint(a * b)"
    run = client.ask(program([code], "42"), files=["data.txt"], on_event=events.append)
    assert run.status == "succeeded" and run.files == ["data.txt"] and _output(events) == "42\n"
    client.delete_file("notes/a b#1.txt")
    with pytest.raises(ApiError) as info:
        client.download("notes/a b#1.txt")
    assert info.value.status == 404


# -- errors -----------------------------------------------------------------------------------------------
def test_errors_of_the_service_are_api_errors_with_its_code(
    client: Client, server: ThreadServer, carol: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ApiError) as info:
        client.get_run("r_doesnotexist")
    assert info.value.status == 404 and info.value.code == "not_found" and not info.value.retryable
    mine = client.create_run(program([], "mine")).id
    assert list(client.run_events(mine))[-1].type == "run_finished"
    with Client(server.url, carol.key) as other, pytest.raises(ApiError) as info:
        other.get_run(mine)  # another tenant's run does not exist for carol
    assert info.value.status == 404
    with Client(server.url, "tbk_not_a_key") as bad, pytest.raises(ApiError) as info:
        bad.me()
    assert info.value.status == 401 and "API key" in info.value.message
    monkeypatch.delenv("THINKBOX_API_KEY", raising=False)
    with Client(server.url) as anonymous:
        assert anonymous.health().status == "ok"
        with pytest.raises(ApiError) as info:
            anonymous.me()
    assert info.value.status == 401 and "THINKBOX_API_KEY" in info.value.message
    monkeypatch.setenv("THINKBOX_API_KEY", carol.key)
    with Client(server.url) as from_env:
        assert from_env.me().user == "carol"


def test_a_key_that_cannot_be_one_is_named_and_whitespace_around_a_key_is_dropped(
    server: ThreadServer, alice: Account
) -> None:
    """httpx refuses such a header with an error about headers (or a UnicodeEncodeError, a traceback in
    ``thinkbox ask --server``); a key read from a file keeps its newline."""
    for bad, why in (("ключ", "not ASCII"), ("tbx_a\nb", "control characters"), ("  ", "is empty")):
        with pytest.raises(ConfigError, match=f"the API key .*{why}.*thinkbox admin key create") as info:
            Client(server.url, bad)
        assert bad.strip() == "" or bad not in str(info.value)
    with Client(server.url, f" {alice.key}\n") as client:
        assert client.me().user == "alice"


def test_an_unreachable_service_is_named_in_the_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "tbk_x", timeout=5) as client, pytest.raises(ServiceUnreachable) as info:
        client.health()
    assert f"cannot reach the thinkbox service at {url}" in str(info.value) and info.value.retryable


# -- the asyncio client -----------------------------------------------------------------------------------
async def test_the_async_client_asks_resumes_a_broken_stream_runs_code_and_moves_files(
    server: ThreadServer, alice: Account
) -> None:
    transport = AsyncBlipTransport()
    async with AsyncClient(server.url, alice.key, transport=transport) as client:
        assert (await client.me()).tenant == "acme"
        created = await client.create_run(program(["print('x')", "print('y')"], "xy"))
        stream = client.run_events(created.id)
        events = [event async for event in stream]
        assert stream.reconnects == 1 and stream.duplicates == 0 and stream.missing == 0
        assert len(events) == (await client.get_run(created.id)).events and _output(events) == "x\ny\n"
        assert [r.headers.get("Last-Event-ID") for r in transport.streams] == [None, str(CUT_AFTER)]
        run = await client.ask(program(["print(2 + 2)"], "4"))
        assert run.status == "succeeded" and run.answer == "4"
        session_id = await client.create_session()
        assert (await client.execute(session_id, "'a' * 3")).result == "'aaa'"
        items = [item async for item in client.execute_stream(session_id, "print('hi')")]
        assert isinstance(items[-1], ExecuteResponse) and items[-1].stdout == "hi\n"
        await client.close_session(session_id)
        await client.upload("async.bin", b"\x00\x01")
        assert await client.download("async.bin") == b"\x00\x01"
        await client.delete_file("async.bin")
        with pytest.raises(ApiError) as info:
            await client.get_run("r_missing")
        assert info.value.status == 404
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", "k", timeout=5) as down:
        with pytest.raises(ServiceUnreachable):
            await down.health()


def test_the_event_stream_decoder_follows_the_format() -> None:
    from thinkbox.client._sse import Decoder, Message

    decoder = Decoder()
    lines = [": keep-alive", "", "id: 7", "event:step", "data: {\"a\":", "data:  1}", "retry: 10", "",
             "event: ignored-without-data", "", "data: x", ""]  # fmt: skip
    messages = [m for m in map(decoder.feed, lines) if m is not None]
    assert messages == [Message("step", '{"a":\n 1}', "7"), Message("message", "x", None)]
