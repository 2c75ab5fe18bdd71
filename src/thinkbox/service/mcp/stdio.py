"""``thinkbox mcp``: the MCP server over stdio, for one local user and no key (an IDE or a desktop app
starts it as a subprocess).

It runs the service's parts in-process (:class:`~thinkbox.service.core.Service`, no HTTP), acting as the
user ``local/local`` of a data folder of its own (``DATA_DIR/mcp`` by default: a ``thinkbox serve`` on the
same data folder would otherwise take this process's unfinished runs for its own after a crash). Runs are
not resumed at start: their client is gone. When the client goes away (stdin closes), the runs still
going are cancelled and every session this process opened is closed. A client that writes something
other than JSON-RPC messages (one JSON value per line) is told so on stderr and the server stops, as if
stdin had closed (the SDK alone would skip such lines without a word).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator

from mcp.server.mcpserver import Context

from thinkbox.config import Settings
from thinkbox.service import accounts
from thinkbox.service.api.deps import CallerInfo
from thinkbox.service.core import Service
from thinkbox.service.mcp.tools import build_server

log = logging.getLogger(__name__)
LOCAL = ("local", "local")


async def serve_stdio(settings: Settings, tenant: str = LOCAL[0], user: str = LOCAL[1]) -> bool:
    """Serve MCP on stdin/stdout until the client closes stdin; False when it stopped on garbage."""
    with _checked_stdin() as garbage:
        await _serve(settings, tenant, user)
    return not garbage.is_set()


async def _serve(settings: Settings, tenant: str, user: str) -> None:
    service = await Service.start(settings, resume=False)
    opened: set[str] = set()
    try:
        owner = await asyncio.to_thread(accounts.local_principal, service.db, tenant, user)
        caller = CallerInfo(owner, service)

        async def resolve(_ctx: Context) -> CallerInfo:
            return caller

        await build_server(resolve, opened.add).run_stdio_async()
    finally:
        await _cleanup(service, opened)


async def _cleanup(service: Service, opened: set[str]) -> None:
    """Cancel the runs still going, close the sessions this client opened, stop the service."""
    for run_id, active in list(service.runs.running().items()):
        with contextlib.suppress(Exception):
            await service.runs.cancel(active, run_id)
    for session_id in opened | set(service.sessions.live_ids()):
        with contextlib.suppress(Exception):
            await service.sessions.close(session_id, "the MCP client went away")
    await service.aclose()


@contextlib.contextmanager
def _checked_stdin() -> Iterator[threading.Event]:
    """Put a pipe on fd 0 fed by a thread that passes on the client's lines while they are JSON; at the
    first that is not, say so on stderr, set the event and close the pipe (the server sees the end of its
    input)."""
    garbage = threading.Event()
    client = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    thread = threading.Thread(
        target=_pass_lines, args=(client, write_end, garbage), daemon=True, name="mcp-stdin"
    )
    thread.start()
    yield garbage


def _pass_lines(client: int, out: int, garbage: threading.Event) -> None:
    with open(client, "rb", closefd=True) as lines, open(out, "wb", buffering=0, closefd=True) as pipe:
        for number, line in enumerate(lines, 1):
            if line.strip() and not _is_json(line):
                shown = line[:80].decode("utf-8", "replace").rstrip()
                print(
                    f"thinkbox mcp: line {number} from the client is not a JSON-RPC message ({shown!r}); "
                    "MCP over stdio is one JSON message per line. Stopping.",
                    file=sys.stderr,
                    flush=True,
                )
                garbage.set()
                return
            try:
                pipe.write(line)
            except BrokenPipeError:
                return


def _is_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict | list)
    except ValueError:
        return False
