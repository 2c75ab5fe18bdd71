"""The interpreter's side of docs/protocol.md: runs *inside* the sandbox, one per session.

Stdlib only at import time (numpy, pandas and matplotlib are used only when the user's code loaded them).
Every backend ends by calling :func:`serve` in the isolated process, with a connected socket.

Threads: the main thread reads requests and runs the user's code; one pump thread moves what is written
to fds 1 and 2 (by ``print``, C code or child processes alike) onto the socket as ``stream`` messages
while the code runs. A request is answered only after the pump has drained everything written before.
"""

from __future__ import annotations

import ast
import base64
import codecs
import contextlib
import importlib
import io
import linecache
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from typing import Any

from thinkbox.sandbox.inside import display, engines, namespace, relay, wire

_KERNEL_FILES = {__file__, wire.__file__}
_TAIL_BYTES = 8 * 1024
_MAX_FILE_BYTES = 64 * 1024 * 1024


class _Channel:
    """The socket, shared by the main thread and the pump thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        data = wire.encode(msg)
        with self.lock:
            self.sock.sendall(data)


class _OutputPump(threading.Thread):
    """Forwards fds 1 and 2 to the channel; enforces the output limit per request."""

    def __init__(self, channel: _Channel, limit: int, adopt: tuple[int, ...] = ()) -> None:
        """``adopt``: the read ends of a pre-started engine's stdout and stderr pipes."""
        super().__init__(name="thinkbox-output", daemon=True)
        self.channel = channel
        self.limit = limit
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        self.readers = {out_r: "stdout", err_r: "stderr"}
        self.readers.update(zip(adopt, ("stdout", "stderr"), strict=False))
        for fd in self.readers:
            os.set_blocking(fd, False)
        self.decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in self.readers.values()
        }
        self.lock = threading.Lock()
        self.request_id: str | None = None
        self.sent = 0
        self.omitted = 0
        self.tails: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.orphan: list[tuple[str, bytes]] = []

    # -- main thread ------------------------------------------------------------------------------
    def begin(self, request_id: str) -> None:
        self.request_id, self.sent, self.omitted = request_id, 0, 0
        self.tails = {"stdout": bytearray(), "stderr": bytearray()}
        orphan, self.orphan = self.orphan, []
        for name, data in orphan:
            self._forward(name, data)

    def sync(self) -> dict[str, Any]:
        """Forward everything written so far (drained here, no thread hand-off); return the truncation."""
        for rfd in self.readers:
            self._drain(rfd, rounds=64)
        summary: dict[str, Any] = {"omitted_bytes": self.omitted}
        if self.omitted:
            summary["tail"] = {k: v.decode("utf-8", "replace") for k, v in self.tails.items()}
        self.request_id = None
        return summary

    # -- pump thread ------------------------------------------------------------------------------
    def run(self) -> None:
        fds = list(self.readers)
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            for fd in ready:
                if fd in self.readers:
                    self._drain(fd, rounds=1)

    def _drain(self, fd: int, rounds: int) -> None:
        with self.lock:
            for _ in range(rounds):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                if not data:
                    return
                self._forward(self.readers[fd], data)

    def _forward(self, name: str, data: bytes) -> None:
        if self.request_id is None:
            if sum(len(d) for _, d in self.orphan) < self.limit:
                self.orphan.append((name, data))
            return
        room = self.limit - self.sent
        if room <= 0:
            self.omitted += len(data)
            tail = self.tails[name]
            tail += data
            del tail[:-_TAIL_BYTES]
            return
        head, rest = data[:room], data[room:]
        self.sent += len(head)
        text = self.decoders[name].decode(head)
        if rest:
            text += self.decoders[name].decode(b"", final=True)
            self.omitted += len(rest)
            self.tails[name] += rest[-_TAIL_BYTES:]
        if text:
            with contextlib.suppress(OSError):
                self.channel.send({"id": self.request_id, "type": "stream", "name": name, "text": text})


class Kernel:
    def __init__(self, sock: socket.socket, options: dict[str, Any]) -> None:
        self.channel = _Channel(sock)
        self.language = str(options.get("language") or "py")
        adopt = tuple(options.get("engine_fds") or ())
        self.pump = _OutputPump(self.channel, int(options.get("output_bytes", 1 << 20)), adopt)
        self.engines = engines.Engines(self.language, options, self.pump.limit)
        self.cell = 0
        self.in_user_code = False
        self.current_id: str | None = None
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.ns["display"] = self._display_object
        self._own = (self.ns["display"],)  # the kernel's own names, left out of the ``variables`` reply
        self._saved_out = os.dup(self.pump.out_w)
        self._saved_err = os.dup(self.pump.err_w)
        self._install_streams()

    # -- plumbing ---------------------------------------------------------------------------------
    def _install_streams(self) -> None:
        os.dup2(self._saved_out, 1)
        os.dup2(self._saved_err, 2)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            stream = io.TextIOWrapper(
                io.FileIO(fd, "w", closefd=False),
                encoding="utf-8",
                errors="backslashreplace",
                line_buffering=True,
            )
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
        sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")

    def _repair_streams(self) -> None:
        """Undo what the previous cell did to stdout/stderr (closed, replaced, fd closed)."""
        try:
            ok = os.fstat(1).st_ino == os.fstat(self._saved_out).st_ino
            ok = ok and os.fstat(2).st_ino == os.fstat(self._saved_err).st_ino
        except OSError:
            ok = False
        replaced = sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__
        closed = sys.stdout is None or sys.stderr is None or sys.stdout.closed or sys.stderr.closed
        if not ok or replaced or closed:
            self._install_streams()

    def _flush(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        if self.in_user_code:
            raise KeyboardInterrupt

    def _display_object(self, obj: Any) -> None:
        mime = display.mime_bundle(obj)
        if mime and self.current_id is not None:
            self._flush()
            self.channel.send({"id": self.current_id, "type": "display", "mime": mime})

    def _send_figures(self) -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            try:
                fig.savefig(buf, format="png", bbox_inches="tight")
            except Exception as exc:  # a broken figure must not break the kernel
                print(f"thinkbox: could not render figure {num}: {exc}", file=sys.stderr)
                continue
            self._display_object(display.Png(buf.getvalue()))
        plt.close("all")

    # -- requests ---------------------------------------------------------------------------------
    def serve(self, setup_error: str | None = None) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        hello = {
            "type": "hello",
            "protocol": wire.PROTOCOL_VERSION,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "language": self.language,
        }
        if setup_error is None and self.language != "py":
            setup_error, hello["engine"] = self.engines.start_main()
        if setup_error is not None:  # the host fails the session's start with this; nothing is served
            self.channel.send({**hello, "error": setup_error})
            return
        self.channel.send(hello)
        self.pump.start()  # after the hello: off the session's start-up path; no request is read before
        while True:
            try:
                msg = wire.recv_frame(self.channel.sock)
            except (wire.FrameError, OSError):
                break
            except KeyboardInterrupt:
                continue
            if msg is None:
                break
            rid = str(msg.get("id", ""))
            try:
                reply = self.handle(rid, msg)
            except KeyboardInterrupt:  # an interrupt that landed outside the user's code
                reply = {"status": "error", "error": _error_dict(KeyboardInterrupt(), None)}
            except Exception as exc:  # a bug or a bad request: answer, keep serving
                reply = {
                    "status": "error",
                    "error": {"type": type(exc).__name__, "message": str(exc), "traceback": ""},
                }
            reply.update(id=rid, type="reply")
            try:
                self.channel.send(reply)
            except wire.FrameError as exc:
                self.channel.send(
                    {
                        "id": rid,
                        "type": "reply",
                        "status": "error",
                        "error": {"type": "ProtocolError", "message": str(exc), "traceback": ""},
                    }
                )
            if msg.get("type") == "shutdown":
                break

    def handle(self, rid: str, msg: dict[str, Any]) -> dict[str, Any]:
        kind = msg.get("type")
        if kind == "execute":
            language = str(msg.get("language") or self.language)
            if language != "py":
                return self._run(rid, lambda: self._in_engine(rid, language, str(msg.get("code", ""))))
            return self._run(rid, lambda: self._execute(str(msg.get("code", ""))))
        if kind == "shell":
            return self._run(rid, lambda: self._shell(str(msg.get("command", ""))))
        if kind == "put_file":
            path = _resolve(msg["path"])
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "wb") as f:
                f.write(base64.b64decode(msg.get("data_b64", "")))
            if "mode" in msg:
                os.chmod(path, int(msg["mode"]))
            return {"status": "ok", "path": path}
        if kind == "get_file":
            path = _resolve(msg["path"])
            size = os.path.getsize(path)
            if size > _MAX_FILE_BYTES:
                raise ValueError(f"{path} is {size} bytes; get_file transfers at most {_MAX_FILE_BYTES}")
            with open(path, "rb") as f:
                return {"status": "ok", "path": path, "data_b64": base64.b64encode(f.read()).decode("ascii")}
        if kind == "list_files":
            return {"status": "ok", "files": _list_files(_resolve(msg.get("path", ".")))}
        if kind == "variables":  # not a cell: no user code runs, nothing changes (inside/namespace.py)
            return {"status": "ok", **namespace.describe(self.ns, hidden={id(o) for o in self._own})}
        if kind in ("ping", "shutdown"):
            return {"status": "ok"}
        raise ValueError(f"unknown request type {kind!r}")

    def _run(self, rid: str, body: Any) -> dict[str, Any]:
        self._repair_streams()
        self.current_id = rid
        self.pump.begin(rid)
        start = time.perf_counter()
        reply: dict[str, Any] = {"status": "ok"}
        try:
            reply.update(body())
        except BaseException as exc:  # the user's error, SystemExit and KeyboardInterrupt included
            self.in_user_code = False
            reply = {"status": "error", "error": _error_dict(exc, exc.__traceback__)}
        finally:
            self.in_user_code = False
        try:
            self._send_figures()
        except BaseException as exc:
            print(f"thinkbox: figures could not be sent: {exc!r}", file=sys.stderr)
        self._flush()
        reply["output"] = engines.merge_output(self.pump.sync(), reply.pop("engine_output", None))
        reply["duration_ms"] = (time.perf_counter() - start) * 1000
        self.current_id = None
        return reply

    def _execute(self, code: str) -> dict[str, Any]:
        self.cell += 1
        filename = f"<cell-{self.cell}>"
        code = _shell_lines_to_calls(code)
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        tree = ast.parse(code, filename=filename)
        last = tree.body[-1] if tree.body else None
        tail = None
        if isinstance(last, ast.Expr):
            tree.body.pop()
            tail = compile(ast.Expression(last.value), filename, "eval")
        body = compile(tree, filename, "exec")
        self.ns.setdefault("_thinkbox_shell", _shell_in_cell)
        self.in_user_code = True
        exec(body, self.ns)
        value = eval(tail, self.ns) if tail is not None else None
        self.in_user_code = False
        if value is None:
            return {}
        self.ns["_"] = value
        mime = display.mime_bundle(value)
        text = mime.pop("text/plain", None)
        if mime:
            self._display_object(value)
        return {"result": text}

    def _in_engine(self, rid: str, language: str, code: str) -> dict[str, Any]:
        """A cell of another language; if the session's own language's interpreter dies, so does this
        process, the same way (the host reports the death as for Python)."""
        try:
            return self.engines.run(rid, language, code, self.channel.send)
        except engines.EngineDied as exc:
            self._flush()
            self.pump.sync()
            engines.exit_like(exc.status)
            raise

    def _shell(self, command: str) -> dict[str, Any]:
        self.in_user_code = True
        proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, check=False)
        self.in_user_code = False
        return {"exit_status": proc.returncode}


def _error_dict(exc: BaseException, tb: types.TracebackType | None) -> dict[str, str]:
    """The user's traceback: the engine's own frames (at the start, or a signal handler's) are left out."""
    te = traceback.TracebackException(type(exc), exc, None if isinstance(exc, SyntaxError) else tb)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename not in _KERNEL_FILES])
    return {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(te.format())}


def _shell_lines_to_calls(code: str) -> str:
    """IPython-style ``!cmd`` lines become calls that run the command in the same sandbox."""
    if "!" not in code:
        return code
    out = []
    for line in code.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("!") and not stripped.startswith("!="):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}_thinkbox_shell({stripped[1:]!r})")
        else:
            out.append(line)
    return "\n".join(out)


def _shell_in_cell(command: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, check=False)
    importlib.invalidate_caches()  # what ``!pip install`` just added is importable in the next line
    if proc.returncode:
        print(f"[exit status {proc.returncode}]", file=sys.stderr)


def _resolve(path: str) -> str:
    return os.path.normpath(os.path.join(os.getcwd(), path))


def _list_files(root: str, limit: int = 10_000) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            is_dir = name in dirnames
            files.append(
                {"path": os.path.relpath(full, root), "size": 0 if is_dir else st.st_size, "is_dir": is_dir}
            )
            if len(files) >= limit:
                return files
    return files


def reseed() -> None:
    """Forked interpreters share their parent's random state: give each its own."""
    random.seed(os.urandom(32))
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))


def preload() -> None:
    """Import what sessions use, once, before forking (the zygote) or before serving (bwrap)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    plt.show = _show  # type: ignore[assignment]
    engines.kernel_source()  # read now: a forked session's root does not show the file
    import html  # noqa: F401  (used by pandas' _repr_html_)


def _show(*args: Any, **kwargs: Any) -> None:
    """plt.show() in a sandbox: send the figures now (as a notebook would) instead of opening a window."""
    kernel = _ACTIVE
    if kernel is not None:
        kernel._send_figures()


_ACTIVE: Kernel | None = None


def serve(sock: socket.socket, options: dict[str, Any]) -> None:
    """Serve docs/protocol.md on ``sock`` until the host disconnects or asks to shut down."""
    global _ACTIVE
    reseed()
    env = options.get("env") or {}
    os.environ.clear()
    os.environ.update(
        {
            "HOME": "/workspace",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "TMPDIR": "/tmp",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.update({str(k): str(v) for k, v in env.items()})
    # as a fresh interpreter would: the session's PYTHONPATH goes first on sys.path (a forked one started
    # before it was known)
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and p not in sys.path]
    sys.path[:0] = extra
    setup_error = _enter(options.get("cwd"))
    relay.start(dict(os.environ))  # before any thread or pipe of the kernel exists
    sock.setblocking(True)
    _ACTIVE = Kernel(sock, options)
    _ACTIVE.serve(setup_error)


def _enter(cwd: object) -> str | None:
    """chdir to the session's start directory (``SessionConfig.cwd``); what went wrong, if anything."""
    if not cwd:
        return None
    try:
        os.chdir(str(cwd))
    except OSError as exc:
        return f"the session's start directory {cwd!r} cannot be entered: {exc.strerror} (SessionConfig.cwd)"
    return None
