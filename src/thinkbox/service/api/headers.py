"""Headers that keep every answer of the API inert in a browser, whatever its body holds.

The web page keeps its API key in the origin's storage, so any answer of this origin that a browser would
run as a page (an HTML or SVG file that sandbox code or a tenant mate wrote, an error that echoes a path)
could read the key. Every answer therefore says ``X-Content-Type-Options: nosniff`` (no type guessed from
the bytes), ``Referrer-Policy: no-referrer``, and, unless its route set a policy of its own (the web page,
:mod:`.routes_web`), ``Content-Security-Policy`` :data:`INERT`: nothing loads or runs, the document gets a
unique opaque origin (``sandbox``: no access to the page's storage even if rendered), and no site can frame
it. The interactive API docs (``/docs``, ``/redoc``) load FastAPI's scripts from a CDN, so they get only
``frame-ancestors 'none'``. File downloads add ``Content-Disposition: attachment`` themselves
(:mod:`.routes_files`).

A pure ASGI middleware rather than ``@app.middleware("http")``: it adds headers to the start message and
leaves the body alone, so streamed answers (events, files) stay streamed.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INERT = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox"
DOCS_POLICY = "frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


class SecurityHeaders:
    """Adds the headers above to every HTTP answer of ``app`` (errors and streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope.get("path", "") in DOCS_PATHS else INERT

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)
