"""The web page: ``/`` and its files under ``/web/``, plain HTML, CSS and JavaScript modules from
``thinkbox/service/web`` (no build step). The page is a client of the public API like any other: it signs
in with an API key, which it sends as the bearer key of every request it makes.

Every answer carries a Content-Security-Policy that allows scripts, styles and connections from this
server only (images also from ``data:`` and ``blob:`` URLs, for the figures of runs and downloads): even
a mistake in the page's escaping could not run a script that came in a question, an answer or an output.
It also requires Trusted Types: a string given to an HTML sink (``innerHTML``, ``DOMParser``,
``insertAdjacentHTML``, ...) throws, unless it went through the one policy the page has, ``thinkbox-html``,
which only ``js/sanitize.js`` holds (to parse a display's HTML into an inert document it copies from); so
code that one day writes a string as HTML fails at once instead of opening a hole. ``form-action 'none'``
(and a key field without a name): the page's script handles its forms, and a submission by the browser
itself would put the key in a URL (``/?api-key=KEY``: history, logs).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from thinkbox.service.errors import ApiError

router = APIRouter(include_in_schema=False)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types thinkbox-html"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type=TYPES[".html"], headers=HEADERS)


@router.get("/web/{name:path}")
async def asset(name: str) -> FileResponse:
    path = (WEB_DIR / name).resolve()
    if not path.is_relative_to(WEB_DIR) or path.suffix not in TYPES or not path.is_file():
        raise ApiError(404, "not_found", f"no file {name!r} of the web page")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
