"""``thinkbox mcp``: the MCP server over stdio, for one local user and no key (an IDE or a desktop app
starts it as a subprocess).

It runs the service's parts in-process (:class:`~thinkbox.service.core.Service`, no HTTP), acting as the
user ``local/local`` of a data folder of its own (``DATA_DIR/mcp`` by default: a ``thinkbox serve`` on the
same data folder would otherwise take this process's unfinished runs for its own after a crash). Runs are
not resumed at start: their client is gone. When the client goes away (stdin closes), the runs still
going are cancelled and every session this process opened is closed. A client that writes something
other than JSON-RPC messages (one JSON value per line) is told so on stderr and the server stops, as if
stdin had closed (the SDK alone would skip such lines without a word). Messages travel over asyncio pipes
rather than the SDK's thread-per-read transport: what ``thinkbox bench mcp`` measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import sys
from typing import BinaryIO

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.stdio import stdio_server

from thinkbox.config import Settings
from thinkbox.service import accounts
from thinkbox.service.api.deps import CallerInfo
from thinkbox.service.core import Service
from thinkbox.service.mcp.tools import build_server

log = logging.getLogger(__name__)
LOCAL = ("local", "local")
LINE_LIMIT = 256 * 1024 * 1024
"""The longest message read from the client (a write_file of service.max_upload_mib in base64 fits)."""


async def serve_stdio(settings: Settings, tenant: str = LOCAL[0], user: str = LOCAL[1]) -> bool:
    """Serve MCP on stdin/stdout until the client closes stdin; False when it stopped on garbage."""
    service = await Service.start(settings, resume=False)
    opened: set[str] = set()
    try:
        owner = await asyncio.to_thread(accounts.local_principal, service.db, tenant, user)
        caller = CallerInfo(owner, service)

        async def resolve(_ctx: Context) -> CallerInfo:
            return caller

        server = build_server(resolve, opened.add)
        if _pipes():
            return await _run_on_pipes(server)
        await server.run_stdio_async()  # stdin is a file: the SDK's own transport (threads)
        return True
    finally:
        await _cleanup(service, opened)


async def _cleanup(service: Service, opened: set[str]) -> None:
    """Cancel the runs still going, close the sessions this client opened, stop the service."""
    for run_id, active in list(service.runs.running().items()):
        with contextlib.suppress(Exception):
            await service.runs.cancel(active, run_id, "the MCP client went away")
    for session_id in opened | set(service.sessions.live_ids()):
        with contextlib.suppress(Exception):
            await service.sessions.close(session_id, "the MCP client went away")
    await service.aclose()


class _Lines:
    """The client's lines, as the SDK's stdio transport reads them (``async for``), from an asyncio pipe (no
    thread per message); the first line that is not JSON ends them, saying so on stderr."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader, self.number, self.garbage = reader, 0, False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self.reader.readline()
        except ValueError:  # past the reader's limit
            return self._stop(f"line {self.number + 1} from the client is longer than {LINE_LIMIT:,} bytes")
        self.number += 1
        if not line:
            raise StopAsyncIteration
        if line.strip() and not _is_json(line):
            shown = line[:80].decode("utf-8", "replace").rstrip()
            return self._stop(f"line {self.number} from the client is not a JSON-RPC message ({shown!r})")
        return line.decode("utf-8", "replace")

    def _stop(self, what: str) -> str:
        self.garbage = True
        print(f"thinkbox mcp: {what}; MCP over stdio is one JSON message per line; stopping", file=sys.stderr)
        raise StopAsyncIteration


class _Wire:
    """Where the SDK's stdio transport writes: an asyncio pipe to the client."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self.writer.drain()


def _is_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict | list)
    except ValueError:
        return False


def _pipes() -> bool:
    """stdin and stdout are pipes, sockets or terminals (what asyncio can watch)."""
    return all(stat.S_ISFIFO(m) or stat.S_ISSOCK(m) or stat.S_ISCHR(m) for m in map(_mode, (0, 1)))


def _mode(fd: int) -> int:
    try:
        return os.fstat(fd).st_mode
    except OSError:
        return 0


async def _run_on_pipes(server: MCPServer) -> bool:
    """Serve over asyncio pipes on the process's stdin and stdout; False when the client sent garbage.

    The wire gets private copies of fds 0 and 1; fd 0 then reads /dev/null and fd 1 writes to stderr, so
    that nothing else in the process (a library's print, a child) can read the client's messages or
    write onto the wire."""
    loop = asyncio.get_running_loop()
    wire_in, wire_out = _take_wire()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), wire_in)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wire_out)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    lines = _Lines(reader)
    try:
        async with stdio_server(stdin=lines, stdout=_Wire(writer)) as (read, write):  # type: ignore[arg-type]
            # MCPServer.run_stdio_async() is this same call on the SDK's own streams (a thread per read
            # and per write); the low-level server is the documented way to serve given streams.
            low = server._lowlevel_server
            await low.run(read, write, low.create_initialization_options())
    finally:
        writer.close()
    return not lines.garbage


def _take_wire() -> tuple[BinaryIO, BinaryIO]:
    """Private copies of fds 0 and 1 for the wire; fd 0 then reads /dev/null, fd 1 writes to stderr."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return os.fdopen(wire_in, "rb", 0), os.fdopen(wire_out, "wb", 0)
