"""/v1/sessions: a sandbox session for programs that bring their own code (a code-interpreter API)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse

from thinkbox.sandbox.types import DisplayData, ExecutionResult, OutputChunk
from thinkbox.service.api.deps import Caller, CallerInfo
from thinkbox.service.api.schemas import (
    ExecuteRequest,
    ExecuteResponse,
    NetworkLog,
    SessionCreate,
    SessionCreated,
    SessionInfo,
    SessionList,
)
from thinkbox.service.api.sse import frame
from thinkbox.service.db.models import SessionRow
from thinkbox.service.errors import ApiError
from thinkbox.service.sessions import LiveSession

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post("", status_code=201, response_model=SessionCreated)
async def create_session(caller: Caller, body: SessionCreate | None = None) -> SessionCreated:
    """A new sandbox session of yours: your folder is its current directory, your tenant's shared folder
    is ``..``. It closes after ``service.session_idle_s`` without use. The body is optional:
    ``{"language": "js"}`` for a JavaScript session (``sh``: bash)."""
    language = body.language if body is not None else "py"
    live = await caller.service.sessions.create(caller.principal, "code", language)
    return SessionCreated(id=live.id, language=language)


@router.get("", response_model=SessionList)
async def list_sessions(caller: Caller) -> SessionList:
    """Your sessions, most recently used first (closed ones too, with why)."""
    sessions = caller.service.sessions
    rows = await asyncio.to_thread(sessions.list_rows, caller.principal)
    infos = [_info(row, sessions.live(row.id)) for row in rows]  # a live session's row lags (touch)
    return SessionList(sessions=sorted(infos, key=lambda info: info.last_activity_at, reverse=True))


@router.get("/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, caller: Caller) -> SessionInfo:
    sessions = caller.service.sessions
    row = await asyncio.to_thread(sessions.owned_row, caller.principal, session_id)
    return _info(row, sessions.live(row.id))


@router.get("/{session_id}/network", response_model=NetworkLog)
async def get_network(session_id: str, caller: Caller) -> NetworkLog:
    """The requests the session's code sent through the egress proxy (the last 1000 of the open session),
    forwarded or refused, oldest first."""
    sessions = caller.service.sessions
    row = await asyncio.to_thread(sessions.owned_row, caller.principal, session_id)
    egress = sessions.egress
    return NetworkLog(requests=egress.records(row.id) if egress is not None else [])


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, caller: Caller) -> Response:
    """Close the session (its variables are gone; files stay). 409 while a run uses it."""
    await caller.service.sessions.close_owned(caller.principal, session_id, "deleted")
    return Response(status_code=204)


@router.post(
    "/{session_id}/execute",
    response_model=ExecuteResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when asked for."}},
)
async def execute(
    session_id: str,
    body: ExecuteRequest,
    caller: Caller,
    accept: Annotated[str | None, Header(max_length=500)] = None,
) -> ExecuteResponse | StreamingResponse:
    """Run ``code`` like a notebook cell. With ``Accept: text/event-stream`` the output streams as events
    ``stdout``/``stderr`` (``{"text"}``), ``display`` (``{"mime"}``) and a last ``result``."""
    sessions = caller.service.sessions
    live = await sessions.get(caller.principal, session_id)
    if live.busy_with is not None:
        raise ApiError(409, "session_busy", f"session {session_id!r} is used by run {live.busy_with!r}")
    if accept is not None and "text/event-stream" in accept:
        return StreamingResponse(_stream(caller, live, body), media_type="text/event-stream")
    result: ExecutionResult | None = None
    async for item in sessions.execute(live, body.code, body.timeout, body.language):
        if isinstance(item, ExecutionResult):
            result = item
    assert result is not None
    return await _finish(caller, result)


async def _stream(caller: CallerInfo, live: LiveSession, body: ExecuteRequest) -> AsyncIterator[bytes]:
    number = 0
    async for item in caller.service.sessions.execute(live, body.code, body.timeout, body.language):
        number += 1
        if isinstance(item, OutputChunk):
            yield frame(event=item.name, number=number, data=item.model_dump_json(include={"text"}))
        elif isinstance(item, DisplayData):
            yield frame(event="display", number=number, data=item.model_dump_json())
        else:
            done = await _finish(caller, item)
            yield frame(event="result", number=number, data=done.model_dump_json())


async def _finish(caller: CallerInfo, result: ExecutionResult) -> ExecuteResponse:
    storage, owner = caller.service.storage, caller.principal
    over = await storage.after_code(owner.tenant_name, owner.user_name)
    return ExecuteResponse(**result.model_dump(), warnings=[str(over)] if over is not None else [])


def _info(row: SessionRow, live: LiveSession | None) -> SessionInfo:
    return SessionInfo(
        id=row.id,
        kind=row.kind,
        created_at=row.created_at,
        last_activity_at=live.last_activity if live is not None else row.last_activity_at,
        closed_at=row.closed_at,
        close_reason=row.close_reason,
        live=live is not None,
        busy_with=live.busy_with if live is not None else None,
    )
