"""What each API call sends and how its answer is read, without I/O: shared by
:class:`~thinkbox.client.Client` and :class:`~thinkbox.client.AsyncClient`, which only move the bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from thinkbox.agent.events import Event, RunFinished, parse_event
from thinkbox.client._errors import ClientError
from thinkbox.client._sse import Message
from thinkbox.sandbox.types import DisplayData, OutputChunk
from thinkbox.service.api.schemas import (
    ExecuteResponse,
    FileEntry,
    FileList,
    Health,
    Me,
    RunCreated,
    RunInfo,
    RunList,
    SessionCreated,
    SessionInfo,
    SessionList,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Scope = Literal["user", "tenant"]
ExecuteItem = OutputChunk | DisplayData | ExecuteResponse
STREAM = {"Accept": "text/event-stream"}
NO_WAIT_S = 600.0  # the longest code timeout the service accepts: execute waits this long when none is given


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait_s: float | None = None
    """How long the service may take to answer (beyond the client's timeout), e.g. code that runs."""


def _seg(value: str) -> str:
    return quote(value, safe="")


def _file(path: str) -> str:
    return quote(path, safe="/")


def _scope(scope: Scope) -> dict[str, Any] | None:
    return None if scope == "user" else {"scope": scope}


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        try:
            return cls.model_validate_json(response.content)
        except ValidationError as exc:
            raise ClientError(
                f"the service answered {response.request.method} {response.request.url.path} with a "
                f"{cls.__name__} this client cannot read ({exc.error_count()} problems); are the client and "
                "the service the same thinkbox version?"
            ) from None

    return read


def _nothing(response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    if not isinstance(data, dict):
        raise ClientError(f"the service answered {response.request.url.path} with JSON that is not an object")
    return data


# -- meta, runs ------------------------------------------------------------------------------------
def health() -> Call[Health]:
    return Call("GET", "/healthz", model(Health))


def me() -> Call[Me]:
    return Call("GET", "/v1/me", model(Me))


def create_run(
    question: str, session_id: str | None, files: list[str] | None, route: str | None = None
) -> Call[RunCreated]:
    body: dict[str, Any] = {"question": question}
    if route is not None:
        body["route"] = route
    if session_id is not None:
        body["session_id"] = session_id
    if files:
        body["files"] = list(files)
    return Call("POST", "/v1/runs", model(RunCreated), json=body)


def get_run(run_id: str) -> Call[RunInfo]:
    return Call("GET", f"/v1/runs/{_seg(run_id)}", model(RunInfo))


def list_runs(limit: int, offset: int, q: str | None) -> Call[RunList]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if q:
        params["q"] = q
    return Call("GET", "/v1/runs", model(RunList), params=params)


def cancel_run(run_id: str) -> Call[RunInfo]:
    return Call("POST", f"/v1/runs/{_seg(run_id)}/cancel", model(RunInfo))


def notebook(run_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/runs/{_seg(run_id)}/notebook", _json)


# -- sessions --------------------------------------------------------------------------------------
def create_session() -> Call[str]:
    return Call("POST", "/v1/sessions", lambda r: model(SessionCreated)(r).id)


def get_session(session_id: str) -> Call[SessionInfo]:
    return Call("GET", f"/v1/sessions/{_seg(session_id)}", model(SessionInfo))


def list_sessions() -> Call[list[SessionInfo]]:
    return Call("GET", "/v1/sessions", lambda r: model(SessionList)(r).sessions)


def close_session(session_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/sessions/{_seg(session_id)}", _nothing)


def execute(
    session_id: str, code: str, timeout: float | None, *, stream: bool = False
) -> Call[ExecuteResponse]:
    body: dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    return Call("POST", f"/v1/sessions/{_seg(session_id)}/execute", model(ExecuteResponse), json=body,
                headers=STREAM if stream else {}, wait_s=timeout or NO_WAIT_S)  # fmt: skip


def execute_item(message: Message) -> ExecuteItem:
    """One event of an execute stream: ``stdout``/``stderr`` chunks, ``display`` items, the ``result``."""
    try:
        if message.event in ("stdout", "stderr"):
            return OutputChunk(name=message.event, text=json.loads(message.data)["text"])  # type: ignore[arg-type]
        if message.event == "display":
            return DisplayData.model_validate_json(message.data)
        if message.event == "result":
            return ExecuteResponse.model_validate_json(message.data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(
            f"the service sent an execute event {message.event!r} this client cannot read: {exc}"
        ) from None
    raise ClientError(f"the service sent an unknown execute event {message.event!r}")


# -- files -----------------------------------------------------------------------------------------
def upload(path: str, data: bytes, scope: Scope) -> Call[FileEntry]:
    return Call("PUT", f"/v1/files/{_file(path)}", model(FileEntry), params=_scope(scope), content=data,
                headers={"Content-Type": "application/octet-stream"})  # fmt: skip


def download(path: str, scope: Scope) -> Call[bytes]:
    return Call("GET", f"/v1/files/{_file(path)}", lambda r: r.content, params=_scope(scope))


def list_files(scope: Scope) -> Call[FileList]:
    return Call("GET", "/v1/files", model(FileList), params=_scope(scope))


def delete_file(path: str, scope: Scope) -> Call[None]:
    return Call("DELETE", f"/v1/files/{_file(path)}", _nothing, params=_scope(scope))


# -- following a run -------------------------------------------------------------------------------
class Cursor:
    """Where a follower of a run's events stands: the last event id it got, and what went wrong on the way.

    A duplicate (an id it already had) is dropped and counted; ids that never came are counted as
    ``missing`` (the service promises neither happens: these counters are how callers check it)."""

    def __init__(self, run_id: str, after: int) -> None:
        self.run_id = run_id
        self.last_id = after
        self.done = False
        self.duplicates = 0
        self.missing = 0
        self.reconnects = 0

    def request(self) -> Call[None]:
        """The request that goes on right after the last event it got."""
        headers = dict(STREAM)
        if self.last_id:
            headers["Last-Event-ID"] = str(self.last_id)
        return Call("GET", f"/v1/runs/{_seg(self.run_id)}/events", _nothing, headers=headers)

    def accept(self, message: Message) -> Event | None:
        """The event of ``message``, or None when it is one to drop."""
        try:
            seq = int(message.id or "")
        except ValueError:
            raise ClientError(f"run {self.run_id}: the service sent an event without a numeric id") from None
        if seq <= self.last_id:
            self.duplicates += 1
            return None
        try:
            event = parse_event(message.data)
        except ValidationError as exc:
            raise ClientError(
                f"run {self.run_id}: the service sent event {seq} ({message.event!r}) that this client "
                f"cannot read ({exc.error_count()} problems); are the client and the service the same "
                "thinkbox version?"
            ) from None
        self.missing += seq - self.last_id - 1
        self.last_id = seq
        self.done = isinstance(event, RunFinished)
        return event
