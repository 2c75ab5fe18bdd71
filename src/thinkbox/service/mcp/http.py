"""``/mcp`` on ``thinkbox serve``: the MCP tools over streamable HTTP, for the bearer key's user.

The SDK's transport runs **stateless** (no ``Mcp-Session-Id``): every request stands alone and names the
sandbox session it uses, as the protocol's newest revision does; a sandbox session outlives the HTTP
requests and closes after ``service.session_idle_s`` without use (or by ``close_session``). Progress
notifications of ``ask`` ride the POST's event stream. The key is checked here, as on every REST route,
before the SDK sees the request (401 with a JSON-RPC error, whose message MCP clients show); the SDK's
Host/Origin checks are on (loopback, ``service.host`` and ``service.allowed_hosts``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import INVALID_REQUEST
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from thinkbox.config import Settings
from thinkbox.service.api.deps import CallerInfo, authenticate
from thinkbox.service.errors import ApiError
from thinkbox.service.mcp.tools import MAX_CODE, build_server

PATH = "/mcp"
_STATE_KEY = "thinkbox_caller"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class McpEndpoint:
    """The ASGI app mounted at ``/mcp``; :meth:`run` must be entered once, in the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_server(_resolve)
        upload = settings.service.max_upload_mib * 1024 * 1024
        self.server.streamable_http_app(
            stateless_http=True,
            transport_security=_security(settings),
            max_request_body_size=max(upload * 4 // 3, MAX_CODE * 6) + 64 * 1024,  # base64, JSON escapes
        )
        self.manager = self.server.session_manager

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        try:
            caller = await authenticate(
                request.app.state.service, key.strip() if scheme.lower() == "bearer" else None
            )
        except ApiError as exc:  # a JSON-RPC error, which MCP clients show (the id is not read yet: null)
            error = {"code": INVALID_REQUEST, "message": exc.message, "data": {"code": exc.code}}
            body = {"jsonrpc": "2.0", "id": None, "error": error}
            await JSONResponse(body, exc.status, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE_KEY] = caller
        await self.manager.handle_request(scope, receive, send)


async def _resolve(ctx: Context) -> CallerInfo:
    request = ctx.request_context.request
    caller = getattr(getattr(request, "state", None), _STATE_KEY, None)
    if not isinstance(caller, CallerInfo):  # cannot happen behind McpEndpoint: refuse all the same
        raise ToolError("no API key came with this request")
    return caller


def _security(settings: Settings) -> TransportSecuritySettings:
    names = [*_LOOPBACK, *settings.service.allowed_hosts]
    if settings.service.host not in ("0.0.0.0", "::", ""):
        names.append(f"[{settings.service.host}]" if ":" in settings.service.host else settings.service.host)
    hosts = [form for name in names for form in (name, f"{name}:*")]
    origins = [f"{scheme}://{host}" for scheme in ("http", "https") for host in hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
