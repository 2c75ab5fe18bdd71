"""The API's interactive docs, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every script, style and
icon they load served by this server from the ``fastapi-offline`` package (``/docs/assets/NAME``), as
FastAPI's "self-hosting JavaScript and CSS for docs" describes; ``/openapi.json`` stays FastAPI's own.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN at floating versions, on the origin
where the web page keeps its API key: a compromised release there could read the key, and a server without
internet showed blank pages. Here each page carries a Content-Security-Policy that lets scripts, styles,
images and connections come from this server only. Swagger UI starts from one inline script that FastAPI
writes; the policy allows exactly that script by its SHA-256 hash (computed from the page as served, so
any other inline script, an injected one included, is refused), not by ``'unsafe-inline'``. ReDoc runs no
inline script, but its styling library writes ``<style>`` elements at run time and its search runs in a
worker made from a ``blob:`` URL: its policy allows inline styles and ``blob:`` workers, never inline
scripts. No OAuth2 redirect page: the API's keys are bearer keys, not OAuth2.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from thinkbox.service.errors import ApiError

router = APIRouter(include_in_schema=False)
ASSETS_PATH = "/docs/assets"
ASSETS = Path(fastapi_offline.__file__).parent / "static"
TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_COMMON = (
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REDOC_POLICY = (
    f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src blob:; {_COMMON}"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def swagger_policy(html: str) -> str:
    """The policy of a Swagger UI page: scripts from this server and the page's one inline script, by hash."""
    inline = _INLINE_SCRIPT.findall(html)
    if len(inline) != 1:  # FastAPI changed its page: refuse rather than allow what was not checked
        raise RuntimeError(f"FastAPI's Swagger UI page has {len(inline)} inline scripts, not 1")
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    return f"default-src 'none'; script-src 'self' 'sha256-{digest}'; style-src 'self'; {_COMMON}"


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    root, app = request.scope.get("root_path", ""), request.app
    page = get_swagger_ui_html(
        openapi_url=root + app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )
    page.headers["Content-Security-Policy"] = swagger_policy(bytes(page.body).decode())
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root, app = request.scope.get("root_path", ""), request.app
    page = get_redoc_html(
        openapi_url=root + app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_POLICY
    return page


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of the files the docs pages load (only those: the package's other files are not served)."""
    if name not in TYPES:
        raise ApiError(404, "not_found", f"no file {name!r} of the API's docs")
    return FileResponse(ASSETS / name, media_type=TYPES[name], headers={"Cache-Control": "no-cache"})
