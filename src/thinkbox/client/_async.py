"""The asyncio client: :class:`AsyncClient`, the same calls as :class:`~thinkbox.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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


class AsyncEventStream(Cursor):
    """:class:`~thinkbox.client.EventStream`, for ``async for``."""

    def __init__(self, client: AsyncClient, run_id: str, after: int) -> None:
        super().__init__(run_id, after)
        self._events = client._follow(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        """Stop following (closes the connection)."""
        await self._events.aclose()


class AsyncClient:
    """A client of a thinkbox service for asyncio programs; see :class:`~thinkbox.client.Client`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        reconnect_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._opts = Options(base_url, api_key, timeout, reconnect_s)
        self.base_url = self._opts.base_url
        self._http = httpx.AsyncClient(**self._opts.http_args(), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------------
    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.json, content=call.content,
                headers=call.headers, timeout=self._opts.timeout_for(call),
            )  # fmt: skip
        except httpx.TransportError as exc:
            raise self._opts.unreachable(exc) from None
        if not response.is_success:
            raise self._opts.api_error(response)
        return call.read(response)

    @contextlib.asynccontextmanager
    async def _open(self, call: Call[Any], timeout: httpx.Timeout) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(call.method, call.path, json=call.json, headers=call.headers,
                                         timeout=timeout) as response:  # fmt: skip
                if not response.is_success:
                    await response.aread()
                    raise self._opts.api_error(response)
                yield response
        except httpx.TransportError as exc:
            raise self._opts.unreachable(exc) from None

    async def _follow(self, stream: AsyncEventStream) -> AsyncGenerator[Event, None]:
        retry = Reconnect(stream.run_id, self._opts.reconnect_s)
        while True:
            error: ClientError | None = None
            try:
                async with self._open(stream.request(), self._opts.stream_timeout()) as response:
                    decoder = Decoder()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        event = stream.accept(message) if message is not None else None
                        if event is not None:
                            retry.progress()
                            yield event
                        if stream.done:
                            return
            except (ApiError, ServiceUnreachable) as exc:
                error = exc
            await asyncio.sleep(retry.delay(error))
            stream.reconnects += 1

    # -- meta, runs ----------------------------------------------------------------------------------
    async def health(self) -> Health:
        return await self._send(wire.health())

    async def me(self) -> Me:
        return await self._send(wire.me())

    async def create_run(
        self,
        question: str,
        *,
        session_id: str | None = None,
        files: list[str] | None = None,
        route: str | None = None,
    ) -> RunCreated:
        return await self._send(wire.create_run(question, session_id, files, route))

    async def get_run(self, run_id: str) -> RunInfo:
        return await self._send(wire.get_run(run_id))

    async def list_runs(self, *, limit: int = 50, offset: int = 0, q: str | None = None) -> RunList:
        return await self._send(wire.list_runs(limit, offset, q))

    async def cancel_run(self, run_id: str) -> RunInfo:
        return await self._send(wire.cancel_run(run_id))

    def run_events(self, run_id: str, after: int = 0) -> AsyncEventStream:
        return AsyncEventStream(self, run_id, after)

    async def ask(
        self,
        question: str,
        *,
        session_id: str | None = None,
        files: list[str] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> RunInfo:
        """See :meth:`thinkbox.client.Client.ask` (one wait on a 429, too)."""
        try:
            created = await self.create_run(question, session_id=session_id, files=files)
        except ApiError as exc:
            if exc.status != 429 or exc.retry_after is None or exc.retry_after > ASK_WAIT_MAX_S:
                raise
            await asyncio.sleep(exc.retry_after)
            created = await self.create_run(question, session_id=session_id, files=files)
        async for event in self.run_events(created.id):
            if on_event is not None:
                on_event(event)
        return await self.get_run(created.id)

    async def notebook(self, run_id: str) -> dict[str, Any]:
        return await self._send(wire.notebook(run_id))

    # -- sessions ------------------------------------------------------------------------------------
    async def create_session(self) -> str:
        return await self._send(wire.create_session())

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._send(wire.get_session(session_id))

    async def list_sessions(self) -> list[SessionInfo]:
        return await self._send(wire.list_sessions())

    async def execute(self, session_id: str, code: str, *, timeout: float | None = None) -> ExecuteResponse:
        return await self._send(wire.execute(session_id, code, timeout))

    async def execute_stream(
        self, session_id: str, code: str, *, timeout: float | None = None
    ) -> AsyncIterator[ExecuteItem]:
        call = wire.execute(session_id, code, timeout, stream=True)
        async with self._open(call, self._opts.timeout_for(call)) as response:
            decoder = Decoder()
            async for line in response.aiter_lines():
                message = decoder.feed(line)
                if message is not None:
                    yield wire.execute_item(message)

    async def close_session(self, session_id: str) -> None:
        await self._send(wire.close_session(session_id))

    # -- files ---------------------------------------------------------------------------------------
    async def upload(self, path: str, data: bytes | BinaryIO, *, scope: Scope = "user") -> FileEntry:
        content = data if isinstance(data, bytes) else await asyncio.to_thread(data.read)
        return await self._send(wire.upload(path, content, scope))

    async def download(self, path: str, *, scope: Scope = "user") -> bytes:
        return await self._send(wire.download(path, scope))

    async def list_files(self, *, scope: Scope = "user") -> FileList:
        return await self._send(wire.list_files(scope))

    async def delete_file(self, path: str, *, scope: Scope = "user") -> None:
        await self._send(wire.delete_file(path, scope))
