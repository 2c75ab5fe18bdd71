"""``thinkbox mcp``: the MCP server over stdio, for MCP clients on this machine (no key; see
:mod:`thinkbox.service.mcp.stdio`). The same tools are served over HTTP at ``/mcp`` by ``thinkbox serve``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from thinkbox.cli.agent_cmd import BackendOpt, BaseUrlOpt, ModelOpt, ScriptOpt, StepsOpt, option_overrides
from thinkbox.config import load_settings
from thinkbox.errors import ThinkboxError

EXIT_ERROR = 2


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_command)


def mcp_command(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where runs and files are kept (default: THINKBOX_DATA_DIR/mcp)."),
    ] = None,
    user: Annotated[
        str, typer.Option("--user", help="Act as this TENANT/USER of the data folder (made when missing).")
    ] = "local/local",
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_steps: StepsOpt = None,
    script: ScriptOpt = None,
) -> None:
    """Serve the MCP tools (ask, create_session, run_code, list_files, read_file, write_file,
    close_session) on stdin/stdout. Add it to an MCP client as the command `thinkbox mcp`."""
    tenant, _, user_name = user.partition("/")
    if not tenant or not user_name:
        print(f"thinkbox mcp: --user takes TENANT/USER, not {user!r}", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="thinkbox mcp: %(message)s")
    try:
        overrides = option_overrides(backend, model, base_url, max_steps, script)
        settings = load_settings(**overrides)
        folder = data_dir if data_dir is not None else settings.data_dir / "mcp"
        settings = settings.model_copy(update={"data_dir": folder})
        from thinkbox.service.mcp.stdio import serve_stdio

        clean = asyncio.run(serve_stdio(settings, tenant, user_name))
    except ThinkboxError as exc:
        print(f"thinkbox mcp: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not clean:
        raise typer.Exit(EXIT_ERROR)
