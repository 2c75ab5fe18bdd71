"""The FastAPI application of ``thinkbox serve``: a thin layer over :class:`~thinkbox.service.core.Service`.

Every route but ``/healthz``, the web page (``/``, ``/web/...``), the API's description (``/openapi.json``,
and the interactive docs of :mod:`.routes_docs`: ``/docs``, ``/redoc``, ``/docs/assets/...``) and the
capability links of ``/v1/images`` needs ``Authorization: Bearer KEY`` (tests/service/test_api_auth.py walks
them all); ``/mcp`` is the MCP server (:mod:`thinkbox.service.mcp.http`). Errors have one shape,
``{"error": {"code", "message"}}``, except on the OpenAI-compatible routes (``/v1/chat/...``,
``/v1/models``), which answer in OpenAI's shape (:mod:`.routes_openai`); another user's or tenant's ids are
answered 404, as ids that do not exist (nothing says they exist); a bug's 500 too has that shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import thinkbox
from thinkbox.config import Settings
from thinkbox.errors import ConfigError, SandboxError, ThinkboxError
from thinkbox.models.base import ModelBackend
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.service.api import (
    routes_docs,
    routes_files,
    routes_openai,
    routes_runs,
    routes_secrets,
    routes_sessions,
    routes_tools,
    routes_variables,
    routes_web,
)
from thinkbox.service.api.deps import Caller
from thinkbox.service.api.headers import HEADERS, SecurityHeaders
from thinkbox.service.api.openai_schemas import openai_error
from thinkbox.service.api.schemas import ErrorBody, Health, Me
from thinkbox.service.core import Service
from thinkbox.service.db.engine import Database
from thinkbox.service.errors import ApiError
from thinkbox.service.mcp.http import PATH as MCP_PATH
from thinkbox.service.mcp.http import McpEndpoint
from thinkbox.service.storage import StorageError

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body of any route but a file upload (``PUT /v1/files/...``: ``service.max_upload_mib``)
and ``/mcp`` (its own limit); the largest JSON a route takes (a cell of 1,000,000 characters) fits."""

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 410, 413, 422, 429)
}


def create_app(
    settings: Settings,
    *,
    model: ModelBackend | None = None,
    backend: SandboxBackend | None = None,
    db: Database | None = None,
) -> FastAPI:
    """The app; its lifespan starts the service (parts passed in stay the caller's)."""

    mcp = McpEndpoint(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await Service.start(settings, model=model, backend=backend, db=db)
        app.state.service = service
        try:
            async with mcp.run():
                yield
        finally:
            await service.aclose()

    app = FastAPI(
        title="thinkbox",
        version=getattr(thinkbox, "__version__", "0"),
        description="An AI agent that thinks in code: runs, sessions and files of a multi-tenant service.",
        lifespan=lifespan,
        responses=ERRORS,
        docs_url=None,  # routes_docs serves them, with their scripts from this server
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": f"{exc.retry_after:g}"} if exc.retry_after is not None else None
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return _error(request, exc.status, exc.code, exc.message, headers, exc.param)

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        return _error(request, exc.status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _relevant(exc.errors())
        problems = "; ".join(_problem(err) for err in errors)[:2000]
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type and any(err.get("loc", ())[:1] == ("body",) for err in exc.errors()):
            problems += (
                f" (the body came {f'as {content_type}' if content_type else 'without a Content-Type'}: "
                "send JSON with Content-Type: application/json)"
            )
        status = 400 if routes_openai.is_openai_path(request.url.path) else 422  # as OpenAI answers
        return _error(request, status, "invalid_request", problems, param=_param(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        message, path, allowed = str(exc.detail), request.url.path, (exc.headers or {}).get("Allow")
        if exc.status_code == 404 and message == "Not Found":  # no route has this path
            message = f"the API has no {path}: see /docs for its endpoints"
        elif exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's
            code, message = "invalid_request", _unreadable(exc.__cause__)
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {path}" + (f": use {allowed}" if allowed else "")
        return _error(request, exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(ThinkboxError)
    async def thinkbox_error(request: Request, exc: ThinkboxError) -> JSONResponse:
        status = 400 if isinstance(exc, ConfigError) else 503 if isinstance(exc, SandboxError) else 500
        headers = {"Retry-After": "2"} if exc.retryable else None
        return _error(request, status, exc.code, exc.message, headers)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        """A bug's 500, in the API's error shape and with the headers of every other answer: Starlette runs
        this handler outside the app's middleware. The exception stays in the server's log (Starlette
        re-raises it after answering), never in the answer."""
        message = "the server failed on this request (a bug, logged on the server): try again or report it"
        return _error(request, 500, "internal_error", message, dict(HEADERS))

    @app.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz(request: Request) -> Health:
        """Answers without a key: the service is up, with what it runs."""
        service: Service = request.app.state.service
        return Health(
            version=app.version,
            database=service.db.dialect,
            sandbox=service.backend.name,
            model=service.model.name,
            active_runs=service.runs.active,
            live_sessions=service.sessions.live_count,
        )

    @app.get("/v1/me", response_model=Me, tags=["meta"])
    async def me(caller: Caller) -> Me:
        """Who the key belongs to."""
        return Me(tenant=caller.principal.tenant_name, user=caller.principal.user_name)

    app.include_router(routes_runs.router)
    app.include_router(routes_sessions.router)
    app.include_router(routes_files.router)
    app.include_router(routes_tools.router)
    app.include_router(routes_secrets.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_variables.router)
    app.include_router(routes_web.router)
    app.include_router(routes_docs.router)
    app.router.routes.append(Route(MCP_PATH, mcp, methods=["GET", "POST", "DELETE"], include_in_schema=False))
    app.add_middleware(_BodyLimit)
    app.add_middleware(SecurityHeaders)  # outside _BodyLimit: its 413 answers get the headers too
    return app


class _BodyLimit:
    """413 for a request body over :data:`MAX_BODY_BYTES`, before it is held whole: FastAPI reads and parses
    a JSON body before a route's key check runs, so without this anyone could make the server hold
    gigabytes. A declared Content-Length is refused at once; a chunked body when it passes the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path == MCP_PATH
            or (scope["method"] == "PUT" and path.startswith("/v1/files/"))
        ):
            await self.app(scope, receive, send)
            return
        too_large = (
            f"the request body is over {MAX_BODY_BYTES:,} bytes, the most this API takes; send files with "
            "PUT /v1/files/PATH"
        )
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            await _error(Request(scope), 413, "too_large", too_large)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:  # a route reading the body answers 413 (the handler above)
                raise StarletteHTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def _problem(err: Any) -> str:
    """One validation error: where, and what (for JSON that does not parse, where in the body and why)."""
    if err.get("type") == "json_invalid":
        return f"body: invalid JSON at character {err['loc'][-1]}: {err.get('ctx', {}).get('error', '')}"
    return f"{'.'.join(str(p) for p in err.get('loc', ()) if not _is_member(p))}: {err.get('msg', '')}"


def _is_member(part: Any) -> bool:
    """``part`` of an error's loc is pydantic's name of a union's member (``str``, ``list[ContentPart]``)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "list", "dict"))


def _relevant(errors: Any) -> list[Any]:
    """``errors``, less those of a union's members that the value did not get into when another member
    went deeper (a list of parts with one bad part is not also "not a valid string")."""

    def split(err: Any) -> tuple[tuple[Any, ...], int]:
        loc = tuple(err.get("loc", ()))
        at = next((i for i, p in enumerate(loc) if _is_member(p)), len(loc))
        return loc[:at], len(loc) - at

    deepest: dict[tuple[Any, ...], int] = {}
    for err in errors:
        where, depth = split(err)
        deepest[where] = max(deepest.get(where, 0), depth)
    return [err for err in errors if split(err)[1] == deepest[split(err)[0]]]


def _param(errors: list[Any]) -> str | None:
    """The one body field all ``errors`` are about (``messages[0].content``), or None (OpenAI's ``param``)."""
    fields = set()
    for err in errors:
        loc = [p for p in err.get("loc", ()) if not _is_member(p)]
        if loc[:1] != ["body"] or len(loc) < 2:
            return None
        fields.add("".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip("."))
    return fields.pop() if len(fields) == 1 else None


def _unreadable(cause: BaseException | None) -> str:
    """Why a JSON body could not be read (FastAPI says only 'There was an error parsing the body')."""
    if isinstance(cause, UnicodeDecodeError):
        why = f"it is not UTF-8 ({cause.reason} at byte {cause.start})"
    elif isinstance(cause, RecursionError):
        why = "its JSON is nested too deeply"
    else:
        why = type(cause).__name__ if cause is not None else "unknown"
    return f"the body cannot be read as JSON: {why}; send UTF-8 JSON"


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The error answer: OpenAI's shape on the OpenAI-compatible routes, thinkbox's elsewhere."""
    if routes_openai.is_openai_path(request.url.path):
        return JSONResponse(openai_error(status, code, message, param), status, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)
