"""/v1/runs: ask a question, follow the run's events (server-sent events, resumable), cancel, export."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from thinkbox.notebook import transcript_to_notebook
from thinkbox.service.api.deps import Caller, CallerInfo, still_authorised
from thinkbox.service.api.schemas import RunCreated, RunInfo, RunList, RunRequest
from thinkbox.service.api.sse import frame
from thinkbox.service.db.models import Run
from thinkbox.service.errors import ApiError
from thinkbox.service.journal import Record

router = APIRouter(prefix="/v1/runs", tags=["runs"])
KEEPALIVE_S = 15.0


def run_info(row: Run) -> RunInfo:
    end = row.finished_at or (time.time() if row.started_at else None)
    return RunInfo(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        question=row.question,
        answer=row.answer,
        error=row.error,
        session_id=row.session_id,
        files=json.loads(row.files or "[]"),
        steps=row.steps,
        tokens=row.tokens,
        model=row.model,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_s=round(end - row.started_at, 3) if end and row.started_at else None,
        events=row.last_seq,
    )


@router.post("", status_code=201, response_model=RunCreated)
async def create_run(body: RunRequest, caller: Caller) -> RunCreated:
    """Start a run: the agent answers ``question`` in a sandbox session of yours (a new one, or
    ``session_id`` to continue one). Follow it at ``/v1/runs/{id}/events``."""
    row = await caller.service.runs.submit(
        caller.principal, body.question, body.session_id, body.files, route=body.route
    )
    return RunCreated(id=row.id, status="queued", session_id=row.session_id)


@router.get("", response_model=RunList)
async def list_runs(
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    q: Annotated[
        str | None, Query(max_length=200, description="Only runs whose question has this text.")
    ] = None,
) -> RunList:
    """Your runs, newest first."""
    rows = await asyncio.to_thread(
        caller.service.runs.list_runs, caller.principal, limit=limit + 1, offset=offset, text=q
    )
    more = len(rows) > limit
    return RunList(runs=[run_info(r) for r in rows[:limit]], next_offset=offset + limit if more else None)


@router.get("/{run_id}", response_model=RunInfo)
async def get_run(run_id: str, caller: Caller) -> RunInfo:
    return run_info(await asyncio.to_thread(caller.service.runs.get, caller.principal, run_id))


@router.post("/{run_id}/cancel", response_model=RunInfo)
async def cancel_run(run_id: str, caller: Caller) -> RunInfo:
    """Stop a queued or running run (409 when it has already ended)."""
    return run_info(await caller.service.runs.cancel(caller.principal, run_id))


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The run's events as SSE."}},
)
async def run_events(
    run_id: str,
    request: Request,
    caller: Caller,
    after: Annotated[int | None, Query(ge=0, description="Resume after this event id.")] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """The run's events as server-sent events: ``id`` (1, 2, ...), ``event`` (the type), ``data`` (JSON).
    The stream ends after ``run_finished``. ``Last-Event-ID`` or ``?after=N`` resumes right after N."""
    service = caller.service
    await asyncio.to_thread(service.runs.get, caller.principal, run_id)
    start = after if after is not None else _event_id(last_event_id)
    records = service.journal.follow(run_id, start)
    return StreamingResponse(
        _sse(records, request, caller),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_id(header: str | None) -> int:
    if header is None or not header.strip():
        return 0
    try:
        value = int(header.strip())
    except ValueError:
        raise ApiError(
            400, "bad_event_id", f"Last-Event-ID must be an event id (a number), not {header!r}"
        ) from None
    if value < 0:
        raise ApiError(400, "bad_event_id", "Last-Event-ID must be >= 0")
    return value


async def _sse(records: AsyncIterator[Record], request: Request, caller: CallerInfo) -> AsyncIterator[bytes]:
    """SSE frames; a comment line every KEEPALIVE_S while nothing happens (proxies close quiet streams).
    The stream ends, without ``run_finished``, once the caller's key is revoked: a client that reconnects
    is answered 401."""
    iterator = aiter(records)
    pending: asyncio.Task[Record] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                if await request.is_disconnected() or not await still_authorised(caller):
                    return
                yield b": keep-alive\n\n"
                continue
            try:
                record = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            if not await still_authorised(caller):
                return
            yield frame(record.data, event=record.type, number=record.seq)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


@router.get("/{run_id}/notebook", responses={200: {"content": {"application/x-ipynb+json": {}}}})
async def run_notebook(run_id: str, caller: Caller) -> JSONResponse:
    """The run as a Jupyter notebook (.ipynb)."""
    runs = caller.service.runs
    await asyncio.to_thread(runs.get, caller.principal, run_id)
    notebook = transcript_to_notebook(await asyncio.to_thread(runs.events, run_id))
    return JSONResponse(
        dict(notebook),
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.ipynb"'},
    )
