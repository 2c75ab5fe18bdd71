"""The blocking client: :class:`Client`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO, TypeVar

import httpx

from thinkbox.agent.events import Event
from thinkbox.client import _wire as wire
from thinkbox.client._errors import ApiError, ClientError, ServiceUnreachable
from thinkbox.client._options import ASK_WAIT_MAX_S, Options, Reconnect
from thinkbox.client._sse import Decoder
from thinkbox.client._wire import Call, Cursor, ExecuteItem, Scope
from thinkbox.service.api.schemas import (
    ExecuteResponse,
    FileEntry,
    FileList,
    Health,
    Me,
    RunCreated,
    RunInfo,
    RunList,
    SessionInfo,
)

T = TypeVar("T")


class EventStream(Cursor):
    """The events of one run, each once, in order, to ``run_finished``; a broken connection is opened
    again with ``Last-Event-ID`` by itself. ``last_id``, ``reconnects``, ``duplicates`` (dropped) and
    ``missing`` say how it went."""

    def __init__(self, client: Client, run_id: str, after: int) -> None:
        super().__init__(run_id, after)
        self._events = client._follow(self)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Stop following (closes the connection)."""
        self._events.close()


class Client:
    """A client of a thinkbox service (``thinkbox serve``).

    ``api_key``: a key from ``thinkbox admin key create`` (default: the THINKBOX_API_KEY variable).
    ``timeout``: seconds to wait for an answer (code that runs gets its own timeout on top).
    ``reconnect_s``: how long a broken event stream is retried without a new event before giving up.
    Errors: :class:`ApiError` for the service's answers, :class:`ServiceUnreachable` when it does not answer.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        reconnect_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._opts = Options(base_url, api_key, timeout, reconnect_s)
        self.base_url = self._opts.base_url
        self._http = httpx.Client(**self._opts.http_args(), transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------------
    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.json, content=call.content,
                headers=call.headers, timeout=self._opts.timeout_for(call),
            )  # fmt: skip
        except httpx.TransportError as exc:
            raise self._opts.unreachable(exc) from None
        if not response.is_success:
            raise self._opts.api_error(response)
        return call.read(response)

    @contextlib.contextmanager
    def _open(self, call: Call[Any], timeout: httpx.Timeout) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(call.method, call.path, json=call.json, headers=call.headers,
                                   timeout=timeout) as response:  # fmt: skip
                if not response.is_success:
                    response.read()
                    raise self._opts.api_error(response)
                yield response
        except httpx.TransportError as exc:
            raise self._opts.unreachable(exc) from None

    def _follow(self, stream: EventStream) -> Generator[Event, None, None]:
        retry = Reconnect(stream.run_id, self._opts.reconnect_s)
        while True:
            error: ClientError | None = None
            try:
                with self._open(stream.request(), self._opts.stream_timeout()) as response:
                    decoder = Decoder()
                    for line in response.iter_lines():
                        message = decoder.feed(line)
                        event = stream.accept(message) if message is not None else None
                        if event is not None:
                            retry.progress()
                            yield event
                        if stream.done:
                            return
            except (ApiError, ServiceUnreachable) as exc:
                error = exc
            time.sleep(retry.delay(error))
            stream.reconnects += 1

    # -- meta, runs ----------------------------------------------------------------------------------
    def health(self) -> Health:
        """The service's health (needs no key)."""
        return self._send(wire.health())

    def me(self) -> Me:
        """The tenant and user of the key."""
        return self._send(wire.me())

    def create_run(
        self,
        question: str,
        *,
        session_id: str | None = None,
        files: list[str] | None = None,
        route: str | None = None,
    ) -> RunCreated:
        """Start a run; ``files``: paths in your folder the question is about; ``session_id``: go on in
        that session (a follow-up question); ``route``: code, direct or auto (default: the service's)."""
        return self._send(wire.create_run(question, session_id, files, route))

    def get_run(self, run_id: str) -> RunInfo:
        return self._send(wire.get_run(run_id))

    def list_runs(self, *, limit: int = 50, offset: int = 0, q: str | None = None) -> RunList:
        """Your runs, newest first; ``q``: only those whose question has this text."""
        return self._send(wire.list_runs(limit, offset, q))

    def cancel_run(self, run_id: str) -> RunInfo:
        return self._send(wire.cancel_run(run_id))

    def run_events(self, run_id: str, after: int = 0) -> EventStream:
        """The run's events after event id ``after``, as typed events (:mod:`thinkbox.agent.events`)."""
        return EventStream(self, run_id, after)

    def ask(
        self,
        question: str,
        *,
        session_id: str | None = None,
        files: list[str] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> RunInfo:
        """Start a run, follow it to its end (``on_event`` sees each event), return it as it ended (the
        answer is ``.answer``). When the service answers 429 (too many runs), waits its Retry-After once
        (at most ASK_WAIT_MAX_S) and tries again; a second 429 is raised."""
        try:
            created = self.create_run(question, session_id=session_id, files=files)
        except ApiError as exc:
            if exc.status != 429 or exc.retry_after is None or exc.retry_after > ASK_WAIT_MAX_S:
                raise
            time.sleep(exc.retry_after)
            created = self.create_run(question, session_id=session_id, files=files)
        for event in self.run_events(created.id):
            if on_event is not None:
                on_event(event)
        return self.get_run(created.id)

    def notebook(self, run_id: str) -> dict[str, Any]:
        """The run as a Jupyter notebook (the .ipynb JSON)."""
        return self._send(wire.notebook(run_id))

    # -- sessions ------------------------------------------------------------------------------------
    def create_session(self) -> str:
        """A new sandbox session; its id."""
        return self._send(wire.create_session())

    def get_session(self, session_id: str) -> SessionInfo:
        return self._send(wire.get_session(session_id))

    def list_sessions(self) -> list[SessionInfo]:
        return self._send(wire.list_sessions())

    def execute(self, session_id: str, code: str, *, timeout: float | None = None) -> ExecuteResponse:
        """Run ``code`` in the session like a notebook cell; errors in the code are data (``.error``)."""
        return self._send(wire.execute(session_id, code, timeout))

    def execute_stream(
        self, session_id: str, code: str, *, timeout: float | None = None
    ) -> Iterator[ExecuteItem]:
        """Like :meth:`execute`, output as it comes: OutputChunk and DisplayData items, the result last."""
        call = wire.execute(session_id, code, timeout, stream=True)
        with self._open(call, self._opts.timeout_for(call)) as response:
            decoder = Decoder()
            for line in response.iter_lines():
                message = decoder.feed(line)
                if message is not None:
                    yield wire.execute_item(message)

    def close_session(self, session_id: str) -> None:
        self._send(wire.close_session(session_id))

    # -- files ---------------------------------------------------------------------------------------
    def upload(self, path: str, data: bytes | BinaryIO, *, scope: Scope = "user") -> FileEntry:
        """Write ``data`` (bytes, or a binary file) to ``path`` in your folder (``scope="tenant"``: the
        tenant's shared folder)."""
        return self._send(wire.upload(path, data if isinstance(data, bytes) else data.read(), scope))

    def download(self, path: str, *, scope: Scope = "user") -> bytes:
        return self._send(wire.download(path, scope))

    def list_files(self, *, scope: Scope = "user") -> FileList:
        return self._send(wire.list_files(scope))

    def delete_file(self, path: str, *, scope: Scope = "user") -> None:
        self._send(wire.delete_file(path, scope))
