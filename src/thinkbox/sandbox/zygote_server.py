"""The fork server: ``python -m thinkbox.sandbox.zygote_server CONTROL_FD CONFIG_JSON``.

Started by :class:`thinkbox.sandbox.zygote.ZygoteBackend` with a scrubbed environment. It imports numpy,
pandas and matplotlib once, freezes the heap for the garbage collector, and then serves spawn requests on
the control socket (``AF_UNIX``/``SOCK_SEQPACKET``: one JSON message per packet; a spawn request carries
the session's socket as ``SCM_RIGHTS``). It stays single-threaded. Per session::

    zygote ──fork──▶ A  host namespaces, root: cgroup, workspace tmpfs, unshare(mnt pid net ipc uts cgroup)
                     └──fork──▶ B  pid 1 of the new pid namespace: minimal root, pivot_root, then tiny init
                                └──fork──▶ C  drops privileges, rlimits, seccomp, kernel.serve()

A reports B's host pid and exits; the zygote (a child subreaper) adopts and reaps B and reports its end.
B reports C's exit status, then exits, which tears down the whole pid namespace. A step that fails sends
``{"op": "error"}`` with the reason on the control socket. Messages to the host::

    {"op": "ready", "pid": ...}                     once, after the preload
    {"op": "spawned", "sid": ..., "pid": B}         from A
    {"op": "error", "sid": ..., "message": ...}     from A, B or C (setup failed)
    {"op": "status", "sid": ..., "returncode": rc}  from B: how C ended
    {"op": "exit", "pid": B, "returncode": rc}      from the zygote: B was reaped
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

from thinkbox.sandbox import cgroups, isolation, kernel, rlimits, seccomp
from thinkbox.sandbox.types import Limits

NAMESPACES = (
    isolation.CLONE_NEWNS
    | isolation.CLONE_NEWPID
    | isolation.CLONE_NEWNET
    | isolation.CLONE_NEWIPC
    | isolation.CLONE_NEWUTS
    | isolation.CLONE_NEWCGROUP
)
DEVICES = ("null", "zero", "full", "random", "urandom")
_NOSUID_NODEV = isolation.MS_NOSUID | isolation.MS_NODEV


class Context:
    """What every session's setup needs, computed once in the zygote before any fork."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.runtime = str(config["runtime_dir"])
        self.instance = str(config["instance"])
        self.root_mnt = os.path.join(self.runtime, "root")
        self.privileged = os.geteuid() == 0
        self.host_uid, self.host_gid = os.getuid(), os.getgid()
        self.uid_base = int(config.get("uid_base", 100000))
        self.last_cap = isolation.last_capability()
        self.ro_binds: list[tuple[str, str]] = []
        self.symlinks: list[tuple[str, str]] = []
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = "/" + top
            if os.path.islink(path):
                self.symlinks.append((os.readlink(path), path))
            elif os.path.isdir(path):
                self.ro_binds.append((path, path))
        self.ro_binds.append(("/usr", "/usr"))
        for extra in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime", "/etc/ssl/certs"):
            if os.path.exists(extra):
                self.ro_binds.append((os.path.realpath(extra), extra))
        for prefix in {os.path.realpath(sys.base_prefix), sys.prefix}:
            if not prefix.startswith("/usr/"):
                self.ro_binds.append((os.path.realpath(prefix), prefix))
        self.filter = seccomp.build_filter()
        self.env_extra = dict(config.get("env") or {})


def _send(ctl: socket.socket, msg: dict[str, Any]) -> None:
    """One packet to the host. The socket stays non-blocking: its O_NONBLOCK flag is shared with every
    forked process, so a child must never flip it (the zygote would block in recv)."""
    data = json.dumps(msg).encode()
    for _ in range(1000):
        try:
            ctl.send(data)
            return
        except BlockingIOError:
            select.select([], [ctl.fileno()], [], 0.1)
        except OSError:
            return


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- A: host side of one session ----------------------------------------------------------------------
def _session_a(ctx: Context, ctl: socket.socket, sess: socket.socket, req: dict[str, Any]) -> None:
    sid = str(req["sid"])
    limits = Limits.model_validate(req["limits"])
    uid = gid = ctx.uid_base + int(req["n"])
    workspace = os.path.join(ctx.runtime, "ws", sid)
    try:
        if ctx.privileged:
            cg = cgroups.Cgroup.create(f"{ctx.instance}-{sid}", limits)
            if cg is not None:
                cg.add(0)
            os.makedirs(workspace, mode=0o700, exist_ok=True)
            if not os.path.ismount(workspace):
                opts = f"size={limits.workspace_mib}m,mode=0700,uid={uid},gid={gid}"
                isolation.mount("tmpfs", workspace, "tmpfs", _NOSUID_NODEV, opts)
            isolation.unshare(NAMESPACES)
        else:
            isolation.unshare(NAMESPACES | isolation.CLONE_NEWUSER)
            isolation.write_id_maps(ctx.host_uid, ctx.host_gid)
            uid = gid = 0
        pid = os.fork()
    except BaseException as exc:
        _send(ctl, {"op": "error", "sid": sid, "message": f"session setup failed: {_reason(exc)}"})
        os._exit(1)
    if pid == 0:
        _session_b(ctx, ctl, sess, req, limits, uid, gid, workspace)
    _send(ctl, {"op": "spawned", "sid": sid, "pid": pid})
    os._exit(0)


# -- B: pid 1 of the session's pid namespace ----------------------------------------------------------
def _build_root(
    ctx: Context, req: dict[str, Any], limits: Limits, uid: int, gid: int, workspace: str
) -> None:
    r = ctx.root_mnt
    isolation.mount(None, "/", None, isolation.MS_REC | isolation.MS_PRIVATE)
    isolation.mount("tmpfs", r, "tmpfs", _NOSUID_NODEV, "size=4m,mode=0755")
    for src, dst in ctx.ro_binds:
        target = r + dst
        if os.path.isdir(src):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        isolation.bind(src, target, read_only=True)
    for link, path in ctx.symlinks:
        os.symlink(link, r + path)
    os.makedirs(r + "/etc", exist_ok=True)
    files = {
        "/etc/passwd": f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "/etc/group": f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n",
        "/etc/hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
        "/etc/hostname": "sandbox\n",
    }
    for path, text in files.items():
        with open(r + path, "w") as f:
            f.write(text)
    os.mkdir(r + "/proc")
    isolation.mount("proc", r + "/proc", "proc", _NOSUID_NODEV | isolation.MS_NOEXEC)
    isolation.bind(r + "/proc/sys", r + "/proc/sys", read_only=True, recursive=True)
    os.mkdir(r + "/dev")
    isolation.mount(
        "tmpfs", r + "/dev", "tmpfs", isolation.MS_NOSUID | isolation.MS_NOEXEC, "size=64k,mode=0755"
    )
    for name in DEVICES:
        open(f"{r}/dev/{name}", "w").close()
        isolation.mount(f"/dev/{name}", f"{r}/dev/{name}", None, isolation.MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{r}/dev/{name}")
    os.mkdir(r + "/dev/shm")
    isolation.mount("tmpfs", r + "/dev/shm", "tmpfs", _NOSUID_NODEV, "size=64m,mode=1777")
    os.mkdir(r + "/tmp")
    isolation.mount("tmpfs", r + "/tmp", "tmpfs", _NOSUID_NODEV, f"size={limits.tmp_mib}m,mode=1777")
    ws = r + "/workspace"
    os.mkdir(ws)
    if ctx.privileged:
        isolation.bind(workspace, ws, read_only=False)
    else:
        isolation.mount("tmpfs", ws, "tmpfs", _NOSUID_NODEV, f"size={limits.workspace_mib}m,mode=0700")
    for m in req.get("mounts", ()):
        target = ws + "/" + m["target"]
        os.makedirs(target, exist_ok=True)
        isolation.bind(m["source"], target, read_only=bool(m["read_only"]), recursive=True)
    os.chdir(r)
    isolation.pivot_root(".", ".")
    isolation.umount2(".", isolation.MNT_DETACH)
    os.chdir("/")
    isolation.mount(None, "/", None, isolation.MS_REMOUNT | isolation.MS_RDONLY | _NOSUID_NODEV)
    isolation.sethostname("sandbox")


def _session_b(
    ctx: Context,
    ctl: socket.socket,
    sess: socket.socket,
    req: dict[str, Any],
    limits: Limits,
    uid: int,
    gid: int,
    workspace: str,
) -> None:
    sid = str(req["sid"])
    try:
        _build_root(ctx, req, limits, uid, gid, workspace)
        child = os.fork()
    except BaseException as exc:
        _send(ctl, {"op": "error", "sid": sid, "message": f"sandbox root setup failed: {_reason(exc)}"})
        os._exit(1)
    if child == 0:
        _session_c(ctx, ctl, sess, req, limits, uid, gid)
    sess.close()

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(child, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            rc = os.waitstatus_to_exitcode(status)
            _send(ctl, {"op": "status", "sid": sid, "returncode": rc})
            os._exit(rc if rc >= 0 else 128 - rc)


# -- C: the interpreter -------------------------------------------------------------------------------
def _session_c(
    ctx: Context,
    ctl: socket.socket,
    sess: socket.socket,
    req: dict[str, Any],
    limits: Limits,
    uid: int,
    gid: int,
) -> None:
    sid = str(req["sid"])
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        isolation.drop_bounding_set(ctx.last_cap)
        if ctx.privileged:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        isolation.clear_capabilities()
        isolation.set_no_new_privs()
        rlimits.apply(limits)
        os.chdir("/workspace")
        ctx.filter.load()
    except BaseException as exc:
        _send(ctl, {"op": "error", "sid": sid, "message": f"dropping privileges failed: {_reason(exc)}"})
        os._exit(1)
    ctl.close()
    try:
        kernel.serve(sess, {"output_bytes": limits.output_bytes, "env": req.get("env") or {}})
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


# -- the server loop ----------------------------------------------------------------------------------
class Server:
    def __init__(self, ctl: socket.socket, ctx: Context) -> None:
        self.ctl = ctl
        self.ctx = ctx
        self.setup_pids: dict[int, str] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.ctl.setblocking(False)
        _send(self.ctl, {"op": "ready", "pid": os.getpid()})
        while True:
            try:
                ready, _, _ = select.select([self.ctl.fileno(), self.wake_r], [], [])
            except InterruptedError:
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
            self.reap()
            if self.ctl.fileno() in ready and not self.serve_requests():
                self.shutdown()
                return

    def serve_requests(self) -> bool:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.ctl, 65536, 4)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            try:
                req = json.loads(data)
            except ValueError:
                for fd in fds:
                    os.close(fd)
                continue
            self.spawn(req, fds)

    def spawn(self, req: dict[str, Any], fds: list[int]) -> None:
        if req.get("op") != "spawn" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _send(self.ctl, {"op": "error", "sid": req.get("sid"), "message": f"bad zygote request {req!r}"})
            return
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(self.wake_r)
                os.close(self.wake_w)
                sess = socket.socket(fileno=fds[0])
                _close_other_fds({0, 1, 2, self.ctl.fileno(), sess.fileno()})
                _session_a(self.ctx, self.ctl, sess, req)
            finally:
                os._exit(1)
        os.close(fds[0])
        self.setup_pids[pid] = str(req["sid"])

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            sid = self.setup_pids.pop(pid, None)
            if sid is None:
                _send(self.ctl, {"op": "exit", "pid": pid, "returncode": rc})
            elif rc not in (0, 1):  # 1: A reported its own error
                _send(
                    self.ctl, {"op": "error", "sid": sid, "message": f"session setup process ended with {rc}"}
                )

    def shutdown(self) -> None:
        """The host went away: kill every session (they are all our children, or adopted ones)."""
        with contextlib.suppress(OSError), open(f"/proc/self/task/{os.getpid()}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)


def _close_other_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str]) -> None:
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=int(argv[1]))
    config = json.loads(argv[2])
    isolation.set_death_signal(signal.SIGKILL)
    isolation.set_child_subreaper()
    try:
        kernel.preload()
        ctx = Context(config)
    except BaseException as exc:
        _send(ctl, {"op": "fatal", "message": f"the zygote could not start: {_reason(exc)}"})
        raise
    gc.collect()
    gc.freeze()
    Server(ctl, ctx).run()


if __name__ == "__main__":
    main(sys.argv)
