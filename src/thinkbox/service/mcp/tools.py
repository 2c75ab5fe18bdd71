"""The MCP server's tools: the agent (``ask``), sandbox sessions (``create_session``, ``run_code``,
``close_session``) and the user's folder (``list_files``, ``read_file``, ``write_file``).

Every tool acts for one user of the service, found by ``resolve`` (the bearer key's user over HTTP, the
local user over stdio), through the same managers as the REST API: the agent is a run of
:class:`~thinkbox.service.runs.RunManager`, a session is one of
:class:`~thinkbox.service.sessions.SessionManager` (another user's id is unknown, an idle one expires), files
go through :class:`~thinkbox.service.storage.Storage` (its path checks and quotas). What the service refuses
comes back as a tool error whose text says what to do, never as a protocol error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

import thinkbox
from thinkbox.agent.events import parse_event
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox.types import DisplayData, ExecutionError, ExecutionResult, Language
from thinkbox.service.api.deps import REVOKED, CallerInfo, still_authorised
from thinkbox.service.errors import ApiError
from thinkbox.service.mcp.trace import IMAGE_TYPES, AskResult, Trace, as_text, trim

Resolve = Callable[[Context], Awaitable[CallerInfo]]
"""The user a tool call acts for (raises :class:`ToolError` when there is none)."""
OnSession = Callable[[str], None]
"""Told the id of every session a tool call creates (stdio closes them when its client goes away)."""

MAX_CODE = 1_000_000
READ_LIMIT = 8 * 1024 * 1024
TEXT_OUTPUT = 20_000
INSTRUCTIONS = (
    "thinkbox runs Python in isolated sandbox sessions that keep their variables between calls, and an "
    "agent that answers questions by writing and running code. Use `ask` for a whole question; use "
    "`create_session` then `run_code` to run your own code step by step (pass the session_id each time; "
    "a session unused for a while expires). Files live in the user's folder, which is the current "
    "directory of every session."
)
Scope = Annotated[
    Literal["user", "tenant"],
    Field(
        description="user: your folder (default); tenant: your tenant's shared folder (`..` in a session)."
    ),
]
LanguageArg = Annotated[
    Language, Field(description="py (Python, default), js (JavaScript on Node.js) or sh (bash).")
]
SessionId = Annotated[str, Field(max_length=64, description="The id create_session (or ask) gave.")]
FilePath = Annotated[str, Field(min_length=1, max_length=1024, description="A path relative to the folder.")]


class SessionCreated(BaseModel):
    session_id: str
    language: str
    idle_timeout_s: float = Field(description="The session closes after this many seconds without use.")


class SessionClosed(BaseModel):
    session_id: str
    closed: bool = Field(description="False when it had already closed or expired.")


class CodeResult(BaseModel):
    stdout: str
    stderr: str
    result: str | None = Field(description="repr() of the value of the last expression, if any.")
    error: ExecutionError | None = Field(description="The exception the code raised, if any.")
    timed_out: bool
    killed: bool = Field(description="The interpreter was killed (and started again, without the variables).")
    state_survived: bool = Field(description="The variables are still there for the next call.")
    output_truncated: bool
    duration_ms: float
    images: int = Field(description="How many images the code displayed (they come as image content).")
    html: list[str] = Field(default_factory=list, description="HTML the code displayed (tables, ...).")
    warnings: list[str] = Field(default_factory=list, description="E.g. a storage quota is exceeded.")


class FileItem(BaseModel):
    path: str
    size: int
    modified: float
    is_dir: bool


class FileListing(BaseModel):
    scope: str
    files: list[FileItem]
    used_bytes: int
    quota_bytes: int


class FileContent(BaseModel):
    path: str
    size: int
    encoding: Literal["utf-8", "base64"] = Field(description="utf-8 text, or base64 for binary files.")
    content: str


def _annotations(*, read_only: bool, destructive: bool = False, idempotent: bool = False) -> ToolAnnotations:
    """Every tool is closed-world: sandbox code has no network and files stay in the service."""
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent or read_only,
        open_world_hint=False,
    )


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    """What the service refuses becomes a tool error its client's model can act on."""
    try:
        yield
    except ApiError as exc:
        raise ToolError(exc.message) from None
    except ThinkboxError as exc:  # storage refusals, sandbox trouble: their messages name the fix
        raise ToolError(exc.message) from None


def build_server(resolve: Resolve, on_session: OnSession | None = None) -> MCPServer:
    """The MCP server with thinkbox's tools, each acting for the user ``resolve`` finds."""
    mcp: MCPServer = MCPServer(
        "thinkbox", instructions=INSTRUCTIONS, version=getattr(thinkbox, "__version__", "0")
    )
    remember = on_session or (lambda _id: None)

    @mcp.tool(annotations=_annotations(read_only=False, destructive=True))
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(min_length=1, max_length=20_000, description="What to answer.")],
        session_id: Annotated[
            str | None,
            Field(max_length=64, description="Go on in this session (its variables); default: a new one."),
        ] = None,
    ) -> Annotated[CallToolResult, AskResult]:
        """Answer a question with the thinkbox agent: it writes Python, runs it in a sandbox session, reads
        the output and iterates until it can answer. Returns the answer and a short trace (thoughts, code,
        outputs), with the session_id to ask a follow-up question in the same session. Reports progress
        once per step. The code may write files in the user's folder."""
        caller = await resolve(ctx)
        service, owner = caller.service, caller.principal
        with _tool_errors():
            run = await service.runs.submit(owner, question, session_id, [])
        trace = Trace(run.id)
        total = float(service.settings.agent.max_steps)
        why = "the MCP client cancelled the call or went away"
        try:
            async for record in service.journal.follow(run.id):
                if not await still_authorised(caller):  # revoked since the call came: nothing more
                    why = "its API key was revoked"
                    raise ToolError(REVOKED)
                note = trace.feed(parse_event(record.data))
                if note is not None:
                    await ctx.report_progress(trace.step, total, note)
        finally:
            if trace.finished is None:  # the client cancelled or went away, or the key was revoked
                service.conversations.spawn(service.runs.cancel(owner, run.id, why))
        row = await asyncio.to_thread(service.runs.get, owner, run.id)
        if row.session_id is not None and session_id is None:
            remember(row.session_id)
        result = trace.result(row.session_id)
        content: list[ContentBlock] = [TextContent(text=as_text(result))]
        content += [ImageContent(data=data, mime_type=mime) for mime, data in trace.images]
        return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))

    @mcp.tool(annotations=_annotations(read_only=False))
    async def create_session(ctx: Context, language: LanguageArg = "py") -> SessionCreated:
        """Start a sandbox session of your own: an interpreter (Python by default; js: JavaScript on
        Node.js, sh: bash) whose variables persist between run_code calls, with your folder as its current
        directory. Close it with close_session when done; it closes by itself after a while without use."""
        caller = await resolve(ctx)
        with _tool_errors():
            live = await caller.service.sessions.create(caller.principal, "code", language)
        remember(live.id)
        return SessionCreated(
            session_id=live.id, language=language, idle_timeout_s=caller.service.sessions.idle_s
        )

    @mcp.tool(annotations=_annotations(read_only=False, destructive=True))
    async def run_code(
        ctx: Context,
        session_id: SessionId,
        code: Annotated[str, Field(max_length=MAX_CODE, description="Code to run like a notebook cell.")],
        timeout: Annotated[
            float | None,
            Field(gt=0, le=600, description="Seconds before the code is stopped (default: the sandbox's)."),
        ] = None,
        language: Annotated[
            Language | None,
            Field(description="py, js or sh for this cell; default: the session's language."),
        ] = None,
    ) -> Annotated[CallToolResult, CodeResult]:
        """Run code in a session like a notebook cell: variables, imports and functions stay for the next
        call. Returns stdout, stderr, the value of the last expression, the error with its traceback, and
        displayed images (matplotlib figures) as image content. A cell of another language than the
        session's runs beside it on the same files (e.g. compute in Python, check in JavaScript). The code
        may change files in your folder; it has no network."""
        caller = await resolve(ctx)
        service = caller.service
        with _tool_errors():
            live = await service.sessions.get(caller.principal, session_id)
            if live.lock.locked():
                raise ApiError(
                    429, "session_busy", f"session {session_id!r} is running other code; wait or use another"
                )
            items = [item async for item in service.sessions.execute(live, code, timeout, language)]
        result = items[-1]
        assert isinstance(result, ExecutionResult)
        shown = [item for item in items if isinstance(item, DisplayData)]
        who = caller.principal
        over = await service.storage.after_code(who.tenant_name, who.user_name)
        return _code_result(result, shown, [str(over)] if over is not None else [])

    @mcp.tool(annotations=_annotations(read_only=False, destructive=True, idempotent=True))
    async def close_session(ctx: Context, session_id: SessionId) -> SessionClosed:
        """Close a session: its variables are gone, your files stay."""
        caller = await resolve(ctx)
        with _tool_errors():
            closed = await caller.service.sessions.close_owned(
                caller.principal, session_id, "closed by the MCP client"
            )
        return SessionClosed(session_id=session_id, closed=closed)

    @mcp.tool(annotations=_annotations(read_only=True))
    async def list_files(ctx: Context, scope: Scope = "user") -> FileListing:
        """Every file and folder in your folder (or your tenant's shared folder), with sizes."""
        caller = await resolve(ctx)
        storage, who = caller.service.storage, caller.principal
        with _tool_errors():
            entries = await asyncio.to_thread(storage.list, who.tenant_name, who.user_name, scope)
            usage = await asyncio.to_thread(storage.usage, who.tenant_name, who.user_name)
        user = scope == "user"
        return FileListing(
            scope=scope,
            files=[FileItem(path=e.path, size=e.size, modified=e.modified, is_dir=e.is_dir) for e in entries],
            used_bytes=usage.user_bytes if user else usage.tenant_bytes,
            quota_bytes=storage.user_quota_bytes if user else storage.tenant_quota_bytes,
        )

    @mcp.tool(annotations=_annotations(read_only=True))
    async def read_file(ctx: Context, path: FilePath, scope: Scope = "user") -> FileContent:
        """A file's content: utf-8 text, or base64 for binary files (at most 8 MiB)."""
        caller = await resolve(ctx)
        storage, who = caller.service.storage, caller.principal
        with _tool_errors():
            handle = await asyncio.to_thread(storage.read, who.tenant_name, who.user_name, scope, path)
        with handle:
            data = await asyncio.to_thread(handle.read, READ_LIMIT + 1)
        if len(data) > READ_LIMIT:
            raise ToolError(f"{path} is larger than {READ_LIMIT:,} bytes: too large to read here")
        try:
            return FileContent(path=path, size=len(data), encoding="utf-8", content=data.decode("utf-8"))
        except UnicodeDecodeError:
            text = base64.b64encode(data).decode("ascii")
            return FileContent(path=path, size=len(data), encoding="base64", content=text)

    @mcp.tool(annotations=_annotations(read_only=False, destructive=True, idempotent=True))
    async def write_file(
        ctx: Context,
        path: FilePath,
        content: Annotated[str, Field(description="The text, or base64 when encoding is base64.")],
        encoding: Literal["utf-8", "base64"] = "utf-8",
        scope: Scope = "user",
    ) -> FileItem:
        """Write a file (parent folders are made; an existing file is replaced). Sessions see it at once."""
        caller = await resolve(ctx)
        storage, who = caller.service.storage, caller.principal
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
        except (binascii.Error, ValueError):
            raise ToolError("content is not valid base64; send text with encoding utf-8") from None
        if len(data) > storage.max_upload_bytes:
            raise ToolError(
                f"the file has {len(data):,} bytes, more than the limit of {storage.max_upload_bytes:,} "
                "(service.max_upload_mib)"
            )
        with _tool_errors():
            entry = await asyncio.to_thread(storage.write, who.tenant_name, who.user_name, scope, path, data)
        return FileItem(path=entry.path, size=entry.size, modified=entry.modified, is_dir=entry.is_dir)

    return mcp


def _code_result(result: ExecutionResult, shown: list[DisplayData], warnings: list[str]) -> CallToolResult:
    images: list[ContentBlock] = []
    html: list[str] = []
    for item in shown:
        mime = next((m for m in IMAGE_TYPES if m in item.mime), None)
        if mime is not None:
            images.append(ImageContent(data=item.mime[mime], mime_type=mime))
        elif "text/html" in item.mime:
            html.append(item.mime["text/html"])
    data = CodeResult(
        stdout=result.stdout,
        stderr=result.stderr,
        result=result.result,
        error=result.error,
        timed_out=result.timed_out,
        killed=result.killed,
        state_survived=result.state_survived,
        output_truncated=result.output_truncated,
        duration_ms=result.duration_ms,
        images=len(images),
        html=html,
        warnings=warnings,
    )
    text = TextContent(text=_as_text(data))
    return CallToolResult(content=[text, *images], structured_content=data.model_dump(mode="json"))


def _as_text(data: CodeResult) -> str:
    parts = []
    if data.stdout:
        parts.append(data.stdout.rstrip("\n"))
    if data.stderr:
        parts.append(f"[stderr]\n{data.stderr.rstrip()}")
    if data.result is not None:
        parts.append(f"Out: {data.result}")
    if data.error is not None:
        parts.append(data.error.traceback.rstrip() or f"{data.error.type}: {data.error.message}")
    if data.timed_out:
        parts.append("[the code timed out]")
    if data.killed:
        parts.append("[the interpreter was killed and started again: variables are gone]")
    if data.images:
        parts.append(f"[{data.images} image(s) below]")
    parts.extend(f"[warning] {w}" for w in data.warnings)
    return trim("\n".join(parts), TEXT_OUTPUT) if parts else "(no output)"
