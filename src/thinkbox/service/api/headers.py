"""Headers that keep every answer of the API inert in a browser, whatever its body holds.

The web page keeps its API key in the origin's storage, so any answer of this origin that a browser would
run as a page (an HTML or SVG file that sandbox code or a tenant mate wrote, an error that echoes a path)
could read the key. Every answer therefore says ``X-Content-Type-Options: nosniff`` (no type guessed from
the bytes), ``Referrer-Policy: no-referrer``, and, unless its route set a policy of its own (the web page,
:mod:`.routes_web`), ``Content-Security-Policy`` :data:`INERT`: nothing loads or runs, the document gets a
unique opaque origin (``sandbox``: no access to the page's storage even if rendered), and no site can frame
it. The web page and the interactive API docs (:mod:`.routes_docs`) set policies of their own, which let
only this server's scripts run. File downloads add ``Content-Disposition: attachment`` themselves
(:mod:`.routes_files`).

An unhandled exception is answered by Starlette's ``ServerErrorMiddleware``, which sits outside every
middleware of the app, this one included: the app's handler for it (:mod:`.app`) puts :data:`HEADERS` on
its 500 itself.

A pure ASGI middleware rather than ``@app.middleware("http")``: it adds headers to the start message and
leaves the body alone, so streamed answers (events, files) stay streamed.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INERT = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": INERT,
}
"""The headers of an answer whose route set none of its own."""


class SecurityHeaders:
    """Adds the headers above to every HTTP answer of ``app`` (errors and streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
