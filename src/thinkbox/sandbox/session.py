"""One live interpreter, spoken to through docs/protocol.md. The same class serves every backend.

Everything that comes from the interpreter is untrusted: the user's code runs in that process and can
write anything to its socket. The in-sandbox output pump enforces ``Limits.output_bytes`` politely, but
the host relies on nothing it says: it counts stream text and display data itself, caps every text field
of a reply, and never buffers a frame larger than the current request may legitimately produce (see
:class:`FrameReader`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from thinkbox.errors import ConfigError, ProtocolError, SessionDead, SessionStartError
from thinkbox.sandbox import procs
from thinkbox.sandbox.frames import (
    CHUNK,
    RESULT_CHARS,
    SMALL_FRAME,
    Dropped,
    FrameReader,
    Output,
    cap_head,
    clean,
    duration,
    execute_allowance,
    reply_error,
)
from thinkbox.sandbox.inside import wire
from thinkbox.sandbox.types import (
    LANGUAGES,
    DisplayData,
    ExecutionError,
    ExecutionResult,
    FileInfo,
    Language,
    Namespace,
    OutputChunk,
    SessionConfig,
    Variable,
)

if TYPE_CHECKING:
    from thinkbox.sandbox.backend import ExitInfo, KernelProcess, SandboxBackend

StreamItem = OutputChunk | DisplayData | ExecutionResult
HELLO_TIMEOUT_S = 30.0
M = TypeVar("M", bound=BaseModel)


class OutputFilter(Protocol):
    """Rewrites what a session hands out (the service redacts secrets with one: ``Session.output_filter``)."""

    def stream(self) -> Callable[[StreamItem], list[StreamItem]]:
        """The filter of one execution's items, called on each in order: what to hand out instead. It may
        hold text back, and hands everything out by the time it gets the ExecutionResult."""
        ...

    def value(self, obj: M) -> M:
        """Anything else the session returns from the interpreter (its variables)."""
        ...


class Session:
    """A persistent, isolated interpreter (Python, JavaScript or bash: :attr:`SessionConfig.language`).
    Create with ``await backend.create_session()``."""

    def __init__(self, backend: SandboxBackend, session_id: str, config: SessionConfig) -> None:
        self.backend = backend
        self.id = session_id
        self.config = config
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.executions = 0
        self.hello: dict[str, Any] = {}
        self._proc: KernelProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._frames: FrameReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._unanswered: str | None = None
        self._dead_reason: str | None = None
        self._closed = False
        self._retired: str | None = None
        self.output_filter: OutputFilter | None = None
        """Applied to every output chunk, display, result and variable list before it leaves the session."""

    # -- life cycle -------------------------------------------------------------------------------
    @classmethod
    async def open(cls, backend: SandboxBackend, config: SessionConfig) -> Session:
        session = cls(backend, uuid.uuid4().hex[:16], config)
        try:
            await session._connect()
        except BaseException:
            await session.close()
            raise
        return session

    async def _connect(self) -> None:
        proc = await self.backend.spawn(self.id, self.config)
        self._proc = proc
        # A small limit: the StreamReader stops reading ahead of us past twice this (the old 96 MiB let a
        # flood of output sit in the host's memory); frames are read in CHUNK-sized pieces.
        self._reader, self._writer = await asyncio.open_unix_connection(sock=proc.sock, limit=CHUNK)
        self._frames = FrameReader(self._reader)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                hello = await self._read_frame(SMALL_FRAME)
        except (TimeoutError, SessionDead) as exc:
            info = await self._exit_info(0.5)
            raise SessionStartError(
                f"the {self.backend.name} sandbox did not become ready ({exc or 'no hello within'} "
                f"{HELLO_TIMEOUT_S:.0f} s; {info.reason or 'interpreter still running'})"
            ) from None
        if isinstance(hello, Dropped):
            raise ProtocolError(
                f"expected hello for protocol {wire.PROTOCOL_VERSION}, got {hello.describe()}"
            )
        if hello.get("type") != "hello" or hello.get("protocol") != wire.PROTOCOL_VERSION:
            raise ProtocolError(f"expected hello for protocol {wire.PROTOCOL_VERSION}, got {hello!r:.500}")
        if hello.get("language", "py") != self.config.language:
            raise ProtocolError(
                f"asked for a {self.config.language} session, the interpreter serves "
                f"{hello.get('language')!r:.50}"
            )
        if hello.get("error"):  # the interpreter could not apply the session's setup (its cwd)
            why = clean(str(hello["error"]))[:2000]
            raise SessionStartError(f"the {self.backend.name} session could not start: {why}")
        self.hello = hello
        self._dead_reason = None
        self._unanswered = None

    def is_alive(self) -> bool:
        usable = not self._closed and self._retired is None
        return usable and self._dead_reason is None and self._proc is not None

    @property
    def busy(self) -> bool:
        """A request (a cell, a file) is being served now."""
        return self._lock.locked()

    @property
    def process(self) -> KernelProcess | None:
        return self._proc

    async def restart(self) -> None:
        """A fresh interpreter for this session (variables are lost; the backend keeps files where it can)."""
        if self._retired is not None:
            raise SessionDead(f"session {self.id} is closed ({self._retired}); create a new one")
        async with self._lock:
            await self._teardown()
            self._closed = False
            await self._connect()

    def retire(self, reason: str) -> None:
        """Refuse new work from now on, saying why (a pool reaping it); :meth:`close` then frees it."""
        self._retired = reason

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._teardown()
        await self.backend.release(self.id)

    async def _teardown(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._proc is not None:
            with contextlib.suppress(Exception):
                await self._proc.kill()
        self._reader = self._writer = None
        self._frames = None
        self._proc = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def interrupt(self) -> None:
        """Send KeyboardInterrupt to the running code (no effect when idle)."""
        if self._proc is not None and self.is_alive():
            self._proc.interrupt()

    # -- running code -----------------------------------------------------------------------------
    async def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: Callable[[OutputChunk], None] | None = None,
        language: Language | None = None,
    ) -> ExecutionResult:
        """Run ``code`` like a notebook cell. The result is data: errors in the code never raise.

        ``language``: py, js or sh; None: the session's own (:attr:`SessionConfig.language`). A cell of
        another language runs in the same sandbox, on the same workspace, in an interpreter of that
        language which the session starts at its first such cell and keeps (its variables persist).
        """
        result: ExecutionResult | None = None
        async for item in self.stream(code, timeout=timeout, language=language):
            if isinstance(item, OutputChunk) and on_output is not None:
                on_output(item)
            elif isinstance(item, ExecutionResult):
                result = item
        assert result is not None
        return result

    async def shell(self, command: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run a shell command inside the same sandbox (cwd, files and limits of the session)."""
        result: ExecutionResult | None = None
        async for item in self._request({"type": "shell", "command": command}, timeout):
            if isinstance(item, ExecutionResult):
                result = item
        assert result is not None
        return result

    def stream(
        self, code: str, *, timeout: float | None = None, language: Language | None = None
    ) -> AsyncIterator[StreamItem]:
        """Run ``code``; yield output chunks and display data as they come, then the ExecutionResult."""
        body: dict[str, Any] = {"type": "execute", "code": code}
        if language is not None and language != self.config.language:
            if language not in LANGUAGES:
                raise ConfigError(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}")
            body["language"] = language
        return self._request(body, timeout)

    async def _request(self, body: dict[str, Any], timeout: float | None) -> AsyncIterator[StreamItem]:
        rewrite = self.output_filter.stream() if self.output_filter is not None else None
        async with contextlib.aclosing(self._exchange(body, timeout)) as items:
            async for item in items:
                if rewrite is None:
                    yield item
                else:
                    for out in rewrite(item):
                        yield out

    async def _exchange(
        self, body: dict[str, Any], timeout: float | None
    ) -> AsyncGenerator[StreamItem, None]:
        limits = self.config.limits
        timeout = limits.timeout_s if timeout is None else timeout
        async with self._lock:
            self._check_alive()
            await self._settle_unanswered()
            rid = f"{self.id}-{next(self._ids)}"
            self.executions += 1
            started = time.perf_counter()
            out = Output(limits)
            timed_out = interrupted_by_us = False
            self._unanswered = rid
            await self._send({"id": rid, **body})
            deadline = started + timeout
            allowance = execute_allowance(limits)
            reply: dict[str, Any] | None = None
            try:
                while reply is None:
                    try:
                        async with asyncio.timeout_at(_loop_time_at(deadline)):
                            msg = await self._read_frame(allowance)
                    except TimeoutError:
                        if interrupted_by_us:  # interrupted and still no answer: kill
                            await self._kill_after_timeout()
                            break
                        timed_out = interrupted_by_us = True
                        self.interrupt()
                        deadline = time.perf_counter() + limits.kill_grace_s
                        continue
                    if isinstance(msg, Dropped):
                        reply = out.dropped(msg, rid)
                        continue
                    if msg.get("id") != rid:
                        continue  # a late message of an earlier request
                    kind = msg["type"]
                    if kind == "stream":
                        chunk = out.stream(msg.get("name"), msg.get("text"))
                        if chunk is not None:
                            yield chunk
                    elif kind == "display":
                        item = out.display(msg.get("mime"), self._frames_last_length())
                        if item is not None:
                            yield item
                    elif kind == "reply":
                        reply = msg
            except SessionDead:
                reply = None
            self._unanswered = None if reply is not None else self._unanswered
            self.last_used = time.monotonic()
            yield await self._result(reply, out, started, timed_out)

    def _frames_last_length(self) -> int:
        return self._frames.last_length if self._frames is not None else 0

    async def _result(
        self, reply: dict[str, Any] | None, out: Output, started: float, timed_out: bool
    ) -> ExecutionResult:
        duration_ms = (time.perf_counter() - started) * 1000
        if reply is None:  # the interpreter is gone
            info = await self._exit_info(1.0)
            self._dead_reason = self._dead_reason or info.reason or "the interpreter ended"
            why = "it did not stop within the grace period after the timeout" if timed_out else info.reason
            partial = self._frames.partial() if self._frames is not None else None
            if timed_out and partial is not None:
                got, length = partial
                why = (
                    f"it sent {got} of the {length} bytes it announced for a message and then nothing more, "
                    "so the connection could not be used further"
                )
            stdout, stderr, truncated = out.finish({})
            return ExecutionResult(
                stdout=stdout,
                stderr=stderr,
                display=out.items,
                error=ExecutionError(
                    type="SandboxTimeout" if timed_out else "InterpreterDied",
                    message=f"the interpreter was killed: {why}; its variables and imports are lost",
                    traceback="",
                ),
                duration_ms=duration_ms,
                timed_out=timed_out,
                killed=True,
                state_survived=False,
                output_truncated=truncated,
                display_dropped=out.display_dropped,
            )
        error = (
            reply_error(reply.get("error")) if reply.get("status") == "error" and reply.get("error") else None
        )
        output = reply.get("output")
        stdout, stderr, truncated = out.finish(output if isinstance(output, dict) else {})
        interrupted = error is not None and error.type == "KeyboardInterrupt"
        if timed_out and interrupted and error is not None:
            error = ExecutionError(
                type="TimeoutError",
                message="execution timed out and was interrupted; variables and imports were kept",
                traceback=error.traceback,
            )
        result = reply.get("result")
        exit_status = reply.get("exit_status")
        return ExecutionResult(
            stdout=stdout,
            stderr=stderr,
            result=cap_head(clean(result), RESULT_CHARS) if isinstance(result, str) else None,
            display=out.items,
            error=error,
            duration_ms=duration(reply.get("duration_ms")) or duration_ms,
            timed_out=timed_out,
            interrupted=interrupted,
            output_truncated=truncated,
            display_dropped=out.display_dropped,
            exit_status=exit_status
            if isinstance(exit_status, int) and not isinstance(exit_status, bool)
            else None,
        )

    # -- files ------------------------------------------------------------------------------------
    async def put_file(self, path: str, data: bytes, *, mode: int | None = None) -> str:
        """Write ``data`` to ``path`` (relative to the workspace); returns the path inside the sandbox."""
        body: dict[str, Any] = {"type": "put_file", "path": path, "data_b64": base64.b64encode(data).decode()}
        if mode is not None:
            body["mode"] = mode
        return str((await self._simple(body))["path"])

    async def get_file(self, path: str) -> bytes:
        return base64.b64decode((await self._simple({"type": "get_file", "path": path}))["data_b64"])

    async def list_files(self, path: str = ".") -> list[FileInfo]:
        return [FileInfo(**f) for f in (await self._simple({"type": "list_files", "path": path}))["files"]]

    async def variables(self) -> Namespace:
        """What the session defines (names, types, short descriptions): not a cell, so no user code runs,
        nothing is recorded and the state is unchanged; waits while a cell runs."""
        reply = await self._simple({"type": "variables"})
        found = reply.get("variables")
        rows = found if isinstance(found, list) else []
        omitted = reply.get("omitted")
        namespace = Namespace(
            variables=[
                Variable(**{k: cap_head(clean(str(row.get(k, ""))), 200) for k in ("name", "type", "repr")})
                for row in rows[:500]
                if isinstance(row, dict)
            ],
            omitted=omitted if isinstance(omitted, int) and not isinstance(omitted, bool) else 0,
        )
        return namespace if self.output_filter is None else self.output_filter.value(namespace)

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._simple({"type": "ping"})
        return (time.perf_counter() - started) * 1000

    async def _simple(self, body: dict[str, Any]) -> dict[str, Any]:
        # get_file carries up to 64 MiB in base64 and list_files up to 10,000 paths: up to a whole frame.
        allowance = wire.MAX_FRAME if body["type"] in ("get_file", "list_files") else SMALL_FRAME
        async with self._lock:
            self._check_alive()
            await self._settle_unanswered()
            rid = f"{self.id}-{next(self._ids)}"
            await self._send({"id": rid, **body})
            async with asyncio.timeout(self.config.limits.timeout_s):
                while True:
                    msg = await self._read_frame(allowance)
                    if isinstance(msg, Dropped):
                        if msg.kind(rid) == "reply":
                            raise ProtocolError(
                                f"{body['type']}: the interpreter's reply was {msg.describe()}"
                            )
                        continue
                    if msg.get("id") == rid and msg["type"] == "reply":
                        break
        if msg.get("status") != "ok":
            err = reply_error(msg.get("error"))
            raise _file_error(err.type, f"{body['type']} {body.get('path', '')!r}: {err.message}")
        return msg

    # -- plumbing ---------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self._retired is not None:
            raise SessionDead(f"session {self.id} is closed ({self._retired}); create a new one")
        if self._closed:
            raise SessionDead(f"session {self.id} is closed; create a new one")
        if self._dead_reason is not None or self._reader is None:
            raise SessionDead(f"session {self.id} is dead ({self._dead_reason}); call restart() to continue")

    async def _send(self, msg: dict[str, Any]) -> None:
        assert self._writer is not None
        try:
            self._writer.write(wire.encode(msg))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._dead_reason = f"connection lost: {exc}"
            raise SessionDead(f"session {self.id}: {self._dead_reason}") from None

    async def _read_frame(self, allowance: int) -> dict[str, Any] | Dropped:
        """The next frame, or a :class:`Dropped` for one over ``allowance`` bytes or not a message."""
        assert self._frames is not None
        try:
            return await self._frames.read(allowance)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self._dead_reason = self._dead_reason or "connection closed"
            raise SessionDead(f"session {self.id}: the interpreter closed its connection") from None

    async def _settle_unanswered(self) -> None:
        """An earlier request was abandoned (its caller was cancelled): interrupt it, wait for its reply."""
        rid = self._unanswered
        if rid is None:
            return
        self.interrupt()
        try:
            async with asyncio.timeout(self.config.limits.kill_grace_s):
                while True:
                    msg = await self._read_frame(execute_allowance(self.config.limits))
                    if isinstance(msg, Dropped):
                        if msg.kind(rid) == "reply":
                            break
                        continue
                    if msg.get("id") == rid and msg["type"] == "reply":
                        break
            self._unanswered = None
        except (TimeoutError, SessionDead):
            await self._kill_after_timeout()
            self._check_alive()

    async def _kill_after_timeout(self) -> None:
        self._dead_reason = "killed after it ignored the interrupt"
        if self._proc is not None:
            await self._proc.kill()

    async def _exit_info(self, timeout: float) -> ExitInfo:
        from thinkbox.sandbox.backend import ExitInfo

        if self._proc is None:
            return ExitInfo(None, "no interpreter")
        try:
            async with asyncio.timeout(timeout):
                info = await self._proc.wait()
        except TimeoutError:
            return ExitInfo(None, "the connection closed but the interpreter has not exited yet")
        if not info.reason:
            info.reason = procs.describe_exit(info.returncode)
        return info


def _loop_time_at(deadline_perf: float) -> float:
    return asyncio.get_running_loop().time() + (deadline_perf - time.perf_counter())


def _file_error(kind: str, message: str) -> Exception:
    if kind == "FileNotFoundError":
        return FileNotFoundError(message)
    if kind in ("IsADirectoryError", "NotADirectoryError", "PermissionError"):
        return OSError(message)
    return OSError(message)
