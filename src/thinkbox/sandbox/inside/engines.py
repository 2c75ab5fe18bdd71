"""Languages other than Python inside a session: a persistent Node.js interpreter (``js``) and a persistent
bash (``sh``), each a child of the session's kernel, in the same sandbox (namespaces, cgroup, uid,
seccomp, rlimits, workspace).

The kernel stays the one end of docs/protocol.md: an ``execute`` request for another language is handed
to that language's engine, and what the engine sends back (output, then its reply) is passed on. An
engine is started at the session's first cell of its language, or before the request when the session
is of that language (the zygote pre-starts Node in its JavaScript embryos: Node takes far longer to start
than a session may). Stdlib only, like the rest of :mod:`thinkbox.sandbox.inside`.

- ``js``: ``node -e <kernel.js> FD`` with a socketpair on FD speaking the framing of docs/protocol.md;
  cells are answered by kernel.js. SIGINT to the kernel is passed on to Node.
- ``sh``: ``bash`` reading NUL-terminated cells from a pipe, ``eval``-ing each in a function of the
  shell itself (variables, functions and the working directory persist), writing the status to another
  pipe. SIGINT is passed on to bash's process group; a trap returns from the cell with status 130.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from thinkbox.sandbox.inside import wire

KERNEL_JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel.js")
_SOURCE: dict[str, str] = {}
NODE_HEAP_SHARE = 0.5
"""Node's old-space limit as a share of the session's memory limit (the rest: code, buffers, stacks)."""
_BASH_LOOP = r"""
__thinkbox_in=$1 __thinkbox_out=$2
unset -v BASH_ARGV0 2>/dev/null
__thinkbox_cell() { trap 'trap - INT; return 130' INT; eval "$1"; }
while IFS= read -r -d '' -u "$__thinkbox_in" __thinkbox_code; do
  __thinkbox_cell "$__thinkbox_code"
  printf '%d\n' "$?" >&"$__thinkbox_out"
done
"""


class EngineDied(Exception):
    """The engine's process ended; ``status`` as ``os.waitstatus_to_exitcode`` gives it."""

    def __init__(self, language: str, status: int | None) -> None:
        how = (
            "unknown status"
            if status is None
            else (f"signal {-status}" if status < 0 else f"exit status {status}")
        )
        super().__init__(f"the {language} interpreter of this session ended ({how})")
        self.status = status


def kernel_source() -> str:
    """kernel.js, read once (the zygote reads it before it forks: sessions cannot see the file)."""
    if "js" not in _SOURCE:
        with open(KERNEL_JS, encoding="utf-8") as f:
            _SOURCE["js"] = f.read()
    return _SOURCE["js"]


def node_binary() -> str:
    node = shutil.which("node", path="/usr/local/bin:/usr/bin:/bin")
    if node is None:
        raise FileNotFoundError(
            "Node.js is not installed where the session runs: install Debian's nodejs package "
            "(scripts/setup.sh does); the docker backend's image has none: use the zygote or bwrap backend"
        )
    return node


def node_argv(memory_mib: int, fd: int) -> list[str]:
    """Node running kernel.js, its socket on ``fd`` (kernel.js reads the number from its argv)."""
    heap = max(64, int(memory_mib * NODE_HEAP_SHARE))
    return [node_binary(), f"--max-old-space-size={heap}", "--no-warnings", "-e", kernel_source(), str(fd)]


class NodeEngine:
    """A Node.js interpreter driven over a socketpair (Node's end: the fd number on its command line)."""

    language = "js"

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.status: int | None = None
        self.version = ""

    @classmethod
    def spawn(cls, memory_mib: int, preexec: Callable[[], None] | None = None) -> NodeEngine:
        """Start Node. With ``preexec`` (the zygote's pre-start, before the session is confined) Node is
        forked and exec'd here, ``preexec`` running in the child first; otherwise through subprocess."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = node_argv(memory_mib, theirs.fileno())
        try:
            if preexec is None:
                saved = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Node starts with SIGINT ignored
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        pass_fds=(theirs.fileno(),),
                        env=_node_env(),
                    )
                finally:
                    signal.signal(signal.SIGINT, saved)
                pid = proc.pid
                proc.returncode = 0  # reaped by wait() below, not by subprocess
            else:
                pid = os.fork()
                if pid == 0:
                    try:
                        theirs.set_inheritable(True)
                        signal.signal(signal.SIGINT, signal.SIG_IGN)  # see kernel.js
                        preexec()
                        os.execve(argv[0], argv, _node_env())
                    finally:
                        os._exit(127)
        finally:
            theirs.close()
        return cls(pid, ours)

    def request(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(wire.encode(msg))

    def receive(self) -> dict[str, Any]:
        msg = wire.recv_frame(self.sock)
        if msg is None:
            raise EngineDied(self.language, self.wait())
        return msg

    def ping(self) -> None:
        """Wait until Node has loaded kernel.js and answers."""
        self.request({"type": "ping"})
        self.receive()

    def setup(self, env: dict[str, str], cwd: str, output_bytes: int) -> dict[str, Any]:
        """Hand Node the session's environment and start directory; its answer (``error`` if any)."""
        self.request({"type": "setup", "env": env, "cwd": cwd, "output_bytes": output_bytes})
        answer = self.receive()
        self.version = str(answer.get("node", ""))
        return answer

    def confine(self, uid: int, gid: int) -> None:
        """A pre-started Node (root until now) becomes the session's user; checked from outside."""
        self.request({"type": "confine", "uid": uid, "gid": gid})
        answer = self.receive()
        if answer.get("type") != "confined":
            raise RuntimeError(f"node did not drop its privileges: {answer!r:.300}")
        check_dropped(self.pid, uid)

    def run(self, rid: str, code: str, forward: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """One cell: Node's output is forwarded as it comes; its reply's fields are returned."""
        self.request({"id": rid, "type": "execute", "code": code})
        with _passing_sigint(lambda: os.kill(self.pid, signal.SIGINT)):
            while True:
                msg = self.receive()
                if msg.get("type") == "reply":
                    msg.pop("type", None)
                    msg.pop("id", None)
                    msg["engine_output"] = msg.pop("output", None)
                    return msg
                if msg.get("type") in ("stream", "display"):
                    msg["id"] = rid
                    forward(msg)

    def wait(self) -> int | None:
        if self.status is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                return None
        return self.status

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait()


class BashEngine:
    """A persistent bash: cells go in NUL-terminated on one pipe, statuses come back on another."""

    language = "sh"

    def __init__(self) -> None:
        code_r, self.code_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["/bin/bash", "--noprofile", "--norc", "-c", _BASH_LOOP, "bash", str(code_r), str(status_w)],
                stdin=subprocess.DEVNULL,
                pass_fds=(code_r, status_w),
                process_group=0,
            )
        finally:
            os.close(code_r)
            os.close(status_w)
        self.status = os.fdopen(status_r, "rb", buffering=0)
        self.pid = self.proc.pid
        self.version = ""

    def run(self, rid: str, code: str, forward: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        if "\0" in code:
            raise ValueError("a shell cell cannot contain a NUL character")
        data = code.encode("utf-8", "surrogateescape") + b"\0"
        with _passing_sigint(lambda: os.killpg(self.pid, signal.SIGINT)):
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.code_w, view) :]
            except BrokenPipeError:
                raise EngineDied(self.language, self.proc.wait()) from None
            line = b""
            while not line.endswith(b"\n"):
                chunk = self.status.read(1)
                if not chunk:
                    raise EngineDied(self.language, self.proc.wait())
                line += chunk
        status = int(line)
        reply: dict[str, Any] = {"exit_status": status}
        if status == 130:
            reply.update(
                status="error",
                error={
                    "type": "KeyboardInterrupt",
                    "message": "interrupted (SIGINT)",
                    "traceback": "",
                },
            )
        elif status:
            why = " (command not found: the cell ran as bash)" if status == 127 else ""
            reply.update(
                status="error",
                error={
                    "type": "CommandFailed",
                    "message": f"exit status {status}{why}",
                    "traceback": "",
                },
            )
        return reply

    def wait(self) -> int | None:
        return self.proc.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.code_w)
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        self.status.close()
        self.proc.wait()


Engine = NodeEngine | BashEngine


def start(language: str, memory_mib: int, env: dict[str, str], cwd: str, output_bytes: int) -> Engine:
    """A new engine of ``language`` in the calling (already confined) session."""
    if language == "sh":
        return BashEngine()
    if language == "js":
        engine = NodeEngine.spawn(memory_mib)
        answer = engine.setup(env, cwd, output_bytes)
        if answer.get("error"):
            engine.close()
            raise RuntimeError(str(answer["error"]))
        return engine
    raise ValueError(f"unknown language {language!r}: use py, js or sh")


class Engines:
    """A session's engines by language: the session's own (started before its hello, or pre-started and
    handed over) and any other language's, started at its first cell."""

    def __init__(self, language: str, options: dict[str, Any], output_bytes: int) -> None:
        self.language = language
        self.memory_mib = int(options.get("memory_mib", 1024))
        self.output_bytes = output_bytes
        self.live: dict[str, Engine] = {}
        if options.get("engine") is not None:  # pre-started before the session was confined
            self.live[language] = options["engine"]

    def start_main(self) -> tuple[str | None, str]:
        """The session's own language's engine, ready; (what went wrong or None, its version)."""
        try:
            engine = self.live.get(self.language)
            if engine is None:
                engine = self.get(self.language)
            elif isinstance(engine, NodeEngine):
                answer = engine.setup(dict(os.environ), os.getcwd(), self.output_bytes)
                if answer.get("error"):
                    return str(answer["error"]), ""
        except Exception as exc:
            return f"the session's {self.language} interpreter could not start: {exc}", ""
        return None, engine.version

    def get(self, language: str) -> Engine:
        engine = self.live.get(language)
        if engine is None:
            env, cwd = dict(os.environ), os.getcwd()
            engine = self.live[language] = start(language, self.memory_mib, env, cwd, self.output_bytes)
        return engine

    def run(
        self, rid: str, language: str, code: str, forward: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """One cell in ``language``'s engine. When it dies: :class:`EngineDied` for the session's own
        language (the session is over), an ``InterpreterDied`` error for another one (started anew at
        its next cell)."""
        try:
            return self.get(language).run(rid, code, forward)
        except EngineDied as exc:
            self.live.pop(language).close()
            if language == self.language:
                raise
            lost = "its variables are lost; the next cell of that language starts a new one"
            error = {"type": "InterpreterDied", "message": f"{exc}: {lost}", "traceback": ""}
            return {"status": "error", "error": error}


def merge_output(own: dict[str, Any], engine: dict[str, Any] | None) -> dict[str, Any]:
    """The output summary of the kernel's pipes and of an engine's own stream messages together."""
    if not engine or not engine.get("omitted_bytes"):
        return own
    merged = dict(own, omitted_bytes=own.get("omitted_bytes", 0) + int(engine["omitted_bytes"]))
    merged["tail"] = engine.get("tail") if not own.get("omitted_bytes") else own.get("tail")
    return merged


def exit_like(status: int | None) -> None:
    """End the calling process the way an engine ended (the host reports the session's death so)."""
    if status is not None and status < 0:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
    os._exit(status if status is not None and 0 <= status < 256 else 1)


def check_dropped(pid: int, uid: int) -> None:
    """From outside the process: every uid of ``pid`` is ``uid`` and it holds no capability."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    uids = {int(v) for v in fields["Uid"].split()}
    caps = {name: int(fields[name], 16) for name in ("CapInh", "CapPrm", "CapEff", "CapAmb")}
    if uids != {uid} or any(caps.values()):
        raise RuntimeError(f"process {pid} kept privileges: uids {sorted(uids)}, capabilities {caps}")


class _passing_sigint:
    """While an engine runs a cell, SIGINT to the kernel is passed on to it (never raised here: a
    KeyboardInterrupt in the middle of a frame would lose the engine's place in the stream)."""

    def __init__(self, deliver: Callable[[], None]) -> None:
        self.deliver = deliver
        self.saved: Any = None

    def _on_sigint(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            self.deliver()

    def __enter__(self) -> None:
        self.saved = signal.signal(signal.SIGINT, self._on_sigint)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.saved)


def _node_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/workspace"}
