"""``thinkbox serve``: the multi-tenant service (FastAPI under uvicorn), OpenAPI at ``/docs``.

Refuses to start, saying why, when its port is taken, the database cannot be written or reached, the sandbox
backend cannot run, or the model is missing; runs a crash interrupted go on at start.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from thinkbox.config import load_settings
from thinkbox.errors import ConfigError, ThinkboxError
from thinkbox.sandbox import registry

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXIT_ERROR = 2


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on (default 8000).")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the service keeps everything (default: THINKBOX_DATA_DIR)."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="e.g. postgresql+psycopg://user@host/db")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Sandbox backend (default zygote).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the API: runs, sessions and files of many users of many tenants."""
    overrides: dict[str, Any] = {}
    service: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if backend is not None:
        overrides["sandbox"] = {"backend": backend}
    for key, value in (("host", host), ("port", port), ("database_url", database_url)):
        if value is not None:
            service[key] = value
    if service:
        overrides["service"] = service
    try:
        settings = load_settings(**overrides)
        import uvicorn
        from uvicorn.config import LOG_LEVELS

        if log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"unknown --log-level {log_level!r}; use one of: {', '.join(LOG_LEVELS)}")
        registry.backend_class(settings.sandbox.backend)  # an unknown name, said before anything starts
        _check_listen(settings.service.host, settings.service.port)

        from thinkbox.service.api.app import create_app
        from thinkbox.service.db.engine import Database
        from thinkbox.service.db.engine import database_url as url_of

        db = Database.open(url_of(settings))  # refuses to start, saying why, before anything listens
    except ThinkboxError as exc:
        print(f"thinkbox serve: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    app = create_app(settings, db=db)
    config = uvicorn.Config(
        _StartFailureInOneLine(app),
        host=settings.service.host,
        port=settings.service.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    from thinkbox.service import local

    published = local.publish(settings, db) if settings.service.local_reuse else None

    def withdraw() -> None:
        if published is not None:
            local.withdraw(settings, db, published)

    class Server(uvicorn.Server):
        """uvicorn's server; the discovery file goes when it has shut down (after a SIGTERM, uvicorn raises
        the signal again on its way out, so a ``finally`` below would not run)."""

        async def shutdown(self, sockets: Any = None) -> None:
            try:
                await super().shutdown(sockets)
            finally:
                withdraw()

    server = Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's exit when the app did not start: said below, with our exit status
        if server.started:
            raise
    finally:
        withdraw()
        db.dispose()
    if not server.started:
        print("thinkbox serve: the service did not start (see the error above)", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR)


def _check_listen(host: str, port: int) -> None:
    """ConfigError when nothing can listen on host:port (in use, or not an address of this machine), said
    before the service starts (uvicorn would say it only once the service and its model had started)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} of {host} is in use (another thinkbox serve?): choose another with --port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): fix --host") from None


class _StartFailureInOneLine:
    """The app; when the service refuses to start (a ThinkboxError: no sandbox backend, no model...), uvicorn
    is told so in one line naming the fix, instead of the traceback Starlette sends with the failure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent once the exception that failed the start is known
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except ThinkboxError as exc:
            if not held:
                raise
            held = [{"type": "lifespan.startup.failed", "message": f"thinkbox serve: {exc.message}"}]
        except BaseException:
            for message in held:
                await send(message)
            raise
        for message in held:
            await send(message)
