"""The fork server: ``python -m thinkbox.sandbox.zygote.server CONTROL_FD CONFIG_JSON``.

Started by :class:`thinkbox.sandbox.zygote.backend.ZygoteBackend` with a scrubbed environment. At start it
enters a private mount namespace (a slave of the host's, so host mounts still show up; unprivileged: a
user namespace first), imports numpy, pandas and matplotlib once, builds the read-only **template root**
(tmpfs + read-only binds of /usr, the Python installation, the venv, a few /etc files, device nodes),
freezes its heap for the garbage collector, and serves requests on the control socket (``AF_UNIX``
``SOCK_SEQPACKET``: one JSON message per packet; a spawn request carries the session's socket as
``SCM_RIGHTS``). It stays single-threaded.

Sessions are prepared ahead of the request as **embryos** (like Android's USAP pool; ``embryos`` in the
config, refilled whenever the server is idle; 0 = only on demand). The zygote enters a new pid namespace
for its children only, then starts two processes in it, both its own children::

    zygote ─unshare(pid)─┬─posix_spawn─▶ I  pid 1: tini (reaps orphans), running ``sleep infinity``, as
                         │                 uid ``uid_base`` without capabilities, stdio on /dev/null
                         │                 (vfork + exec: no copy of the zygote's page tables)
                         └─fork────────▶ C  the interpreter, root until it drops privileges: own process
                                           group, joins its own cgroup (a migration waits for an RCU
                                           grace period, so it is done now), unshare(mnt net ipc uts
                                           cgroup), recursive bind of the template, proc (hidepid=2,
                                           host-revealing files masked), /run; waits for its request
    request: zygote mounts the size-limited workspace tmpfs in its own mount namespace (it propagates
             into C's, and outlives C, so a restart keeps the files) and hands the request, the session
             socket and one O_PATH fd per mount source (opened once by the host for the session) to C;
             C: writes the session's limits into its cgroup, /tmp and /dev/shm, /run/passwd, binds the
             workspace and the caller's mounts (re-opened in its own namespace without following
             symlinks, checked to be the same directory; targets opened beneath the workspace, never
             through its symlinks; read-only recursively), pivot_root, drops privileges (own uid, no
             capabilities, NO_NEW_PRIVS), rlimits, seccomp, reads its environment from the host over the
             session socket, kernel.serve().

**JavaScript sessions** get embryos of their own (``js_embryos`` in the config; python and shell
sessions share the Python ones): before its request, C also starts Node (``inside/kernel.js``), its child,
in C's namespaces and cgroup, exec'd with NO_NEW_PRIVS, the session's seccomp filters, SIGINT ignored and
a bounding set of only CAP_SETUID and CAP_SETGID (empty unprivileged), and tells the host ``warm`` once
Node answers (Node takes longer to start than a whole Python session). After the request, C's
pivot_root moves Node's root with its own; C sets Node's rlimits (prlimit) and priority, tells it to
become the session's uid (setgroups, setgid, setuid: every capability goes) and checks that through
``/proc/<pid>/status`` before it drops its own privileges. C then serves as the kernel of the session and
hands JavaScript cells to Node (docs/protocol.md, Languages).

**What the zygote never sees**: a session's id, environment, mount paths, mount targets and hidden paths
(a service's tenant and user names). Whatever the zygote parses stays in its heap, and every later session
is forked from that heap: requests carry only a slot number (the session's uid offset and workspace
name), limits, the number of mount sources and the owners' ids.

One fork of the 100 MB zygote per session, not two: the fork's copy of the page tables and the first
writes to shared pages are most of the CPU a session start costs. I stays in the zygote's mount and
network namespaces, outside the session's cgroup; it runs no session code, holds none of the zygote's
fds, and the session can neither see it (hidepid) nor signal or trace it (another uid, seccomp).

CPU priority (root only): the zygote serves requests at nice -5; a spare embryo is forked and prepared
at nice 19 (it yields to the sessions being started) and is reniced to 0 (C's process group) when taken;
C checks it is at 0 before it drops its capabilities, so user code always runs at 0. C's own process
group means that a session's ``kill(0, ...)`` reaches only its own processes.

The host interrupts C directly and kills I (SIGKILL to a pid namespace's init ends every process in it).
When the zygote reaps C it reports how C ended and kills I; it reaps I once the namespace is empty, then
removes the cgroup. Messages to the host::

    {"op": "ready", "pid": ...}                       once, after the preload
    {"op": "fatal", "message": ...}                   the zygote could not start
    {"op": "spawned", "slot": ..., "pid": I, "kernel": C, "cgroup": name}   host pids and the cgroup
    {"op": "error", "slot": ..., "message": ...}      C: setup failed (the process then exits)
    {"op": "status", "slot": ..., "returncode": rc}   how C ended
    {"op": "exit", "pid": I, "returncode": rc}        the zygote reaped I: nothing of the session is left
    {"op": "released", "slot": ...}                   the workspace of a closed session is gone
    {"op": "embryo", "pid": I, "kernel": C, "kind"}   a prepared, unused session (for idle_pids())
    {"op": "warm", "pid": I}                          from C: its pre-started Node answered (kind js)

Requests from the host: ``{"op": "spawn", "slot", "limits", "language", "sources": n, "owners": [[uid, gid],
...]}``
(+ the session socket and one fd per distinct mount source) and ``{"op": "release", "slot"}``. For each
owner the zygote adds the fd of a user namespace mapping it to the session's uid (made once per mapping),
for C's idmapped mounts. Over the session socket, never through the zygote, the host sends C two frames:
``{"type": "mounts", "mounts": [{"source": i, "target", "read_only", "hide": [...], "owner": j}]}``,
read before C specializes its root, and ``{"type": "setup", "env": {...}, "cwd": ...}``, read once C is
confined, before the protocol starts.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import sys
from typing import Any

from thinkbox.sandbox.confine import cgroups, isolation
from thinkbox.sandbox.inside import kernel
from thinkbox.sandbox.zygote.embryo import (
    NOSUID_NODEV,
    SPARE_NICE,
    ZYGOTE_NICE,
    Context,
    reason,
    recv_fds,
    run_embryo,
    send,
    session_uid,
)

NOBODY = 65534


# -- the server loop ----------------------------------------------------------------------------------
class Embryo:
    """A session prepared ahead of its request (like Android's USAP pool): its init, pid 1 of a new pid
    namespace, and its interpreter, pid 2, both children of the zygote."""

    def __init__(
        self, pid: int, kernel: int, chan: socket.socket, cg: cgroups.Cgroup | None, kind: str
    ) -> None:
        self.pid = pid
        self.kernel = kernel
        self.chan = chan
        self.cgroup = cg
        self.kind = kind
        """``py`` (Python and shell sessions) or ``js`` (a JavaScript session: Node pre-started)."""
        self.slot: int | None = None


def embryo_kind(language: object) -> str:
    return "js" if language == "js" else "py"


class Server:
    def __init__(self, ctl: socket.socket, ctx: Context, embryos: int, js_embryos: int = 0) -> None:
        self.ctl = ctl
        self.ctx = ctx
        self.targets = {"py": embryos, "js": js_embryos}
        self.embryos: list[Embryo] = []
        self.unused: set[int] = set()
        self.inits: dict[int, Embryo] = {}
        self.kernels: dict[int, Embryo] = {}
        self.counter = 0
        self.usernses: dict[tuple[int, int, int], int] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.ctl.setblocking(False)
        send(self.ctl, {"op": "ready", "pid": os.getpid()})
        while True:
            timeout = 0.0 if self.short_of() is not None else None
            try:
                ready, _, _ = select.select([self.ctl.fileno(), self.wake_r], [], [], timeout)
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
            kind = self.short_of()
            if not ready and kind is not None:  # idle: prepare the next session
                with contextlib.suppress(OSError):
                    self.embryos.append(self.make_embryo(spare=True, kind=kind))

    def short_of(self) -> str | None:
        """The kind of embryo to prepare next (Python ones first), None when every pool is full."""
        for kind, target in self.targets.items():
            if sum(1 for e in self.embryos if e.kind == kind) < target:
                return kind
        return None

    def serve_requests(self) -> bool:
        while True:
            try:
                data, fds = recv_fds(self.ctl)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            try:
                req = json.loads(data)
            except ValueError:
                req = {}
            op = req.get("op")
            if op == "spawn" and fds:
                self.spawn(req, fds)
                continue
            for fd in fds:
                os.close(fd)
            if op == "release":
                self.release(int(req["slot"]))
            else:
                msg = f"bad zygote request {req!r}"
                send(self.ctl, {"op": "error", "slot": req.get("slot"), "message": msg, "no_process": True})

    def make_embryo(self, spare: bool = False, kind: str = "py") -> Embryo:
        cg = None
        if self.ctx.privileged:  # the interpreter creates it (off this loop); named here to remove it
            self.counter += 1
            cg = cgroups.Cgroup.named(f"{self.ctx.instance}-{os.getpid()}e{self.counter}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        low = spare and self.ctx.privileged
        init = pid = -1
        try:
            isolation.unshare(isolation.CLONE_NEWPID)
            try:
                # pid 1: tini, started by vfork + exec, so the only copy of the zygote's page tables per
                # session is the interpreter's fork below
                init = self.spawn_init()
                if low:  # the fork of a spare yields to the sessions being started
                    os.setpriority(os.PRIO_PROCESS, 0, SPARE_NICE)
                pid = os.fork()
                if pid == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        _close_other_fds({0, 1, 2, self.ctl.fileno(), theirs.fileno()})
                        run_embryo(self.ctx, self.ctl, theirs, cg, spare, kind, init)
                    finally:
                        os._exit(1)
            finally:
                if low:
                    with contextlib.suppress(OSError):
                        os.setpriority(os.PRIO_PROCESS, 0, self.ctx.nice)
                isolation.setns(self.ctx.own_pidns, isolation.CLONE_NEWPID)
        except OSError:
            ours.close()
            if init > 0:  # its namespace ends with it
                with contextlib.suppress(OSError):
                    os.kill(init, signal.SIGKILL)
            raise
        finally:
            theirs.close()
        with contextlib.suppress(OSError):  # also here: no race with the renice in take_embryo
            os.setpgid(pid, pid)
        embryo = Embryo(init, pid, ours, cg, kind)
        self.unused.add(init)
        self.inits[init] = embryo
        self.kernels[pid] = embryo
        if spare:  # one made on demand is taken at once
            send(self.ctl, {"op": "embryo", "pid": init, "kernel": pid, "kind": kind})
        return embryo

    def spawn_init(self) -> int:
        """pid 1 of the new pid namespace: tini, by vfork + exec, its stdio on /dev/null (none of the
        zygote's fds: they are close-on-exec). Privileged: as uid and gid ``uid_base`` with no
        capabilities (the real ids are switched around the spawn and ``resetids`` makes them effective
        in the child; exec then clears the capabilities of a non-root process)."""
        ctx = self.ctx
        stdio = [(os.POSIX_SPAWN_DUP2, ctx.null_fd, fd) for fd in (0, 1, 2)]
        if not ctx.privileged:
            return os.posix_spawn(ctx.init_argv[0], ctx.init_argv, {}, setpgroup=0, file_actions=stdio)
        os.setresgid(ctx.uid_base, 0, 0)
        os.setresuid(ctx.uid_base, 0, 0)
        try:
            return os.posix_spawn(
                ctx.init_argv[0], ctx.init_argv, {}, setpgroup=0, resetids=True, file_actions=stdio
            )
        finally:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)

    def spawn(self, req: dict[str, Any], fds: list[int]) -> None:
        slot = int(req["slot"])
        data = json.dumps(req).encode()
        try:
            if len(fds) != 1 + int(req.get("sources", 0)):
                raise ValueError(f"{len(fds)} fds for {req.get('sources')} mount sources")
            uid = session_uid(self.ctx, req)
            # one user namespace per mount owner, mapping it to this slot's uid: for idmapped mounts
            userns = [self.userns(int(o), int(g), uid) for o, g in req.get("owners", ())]
            if req.get("fresh", True):  # a new session: nothing of an earlier one in its workspace
                self.release(slot, quiet=True)
            self.mount_workspace(slot, int(req["limits"]["workspace_mib"]), uid)
            kind = embryo_kind(req.get("language"))
            embryo = self.take_embryo(kind)
            try:
                socket.send_fds(embryo.chan, [data], fds + userns)
            except OSError:  # that embryo died meanwhile: make a fresh one
                embryo.chan.close()
                embryo = self.take_embryo(kind, fresh=True)
                socket.send_fds(embryo.chan, [data], fds + userns)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            msg = f"session setup failed in the zygote: {reason(exc)}"
            send(self.ctl, {"op": "error", "slot": slot, "message": msg, "no_process": True})
            return
        finally:
            for fd in fds:
                os.close(fd)
        embryo.chan.close()
        embryo.slot = slot
        cgroup = embryo.cgroup.name if embryo.cgroup is not None else None
        spawned = {
            "op": "spawned",
            "slot": slot,
            "pid": embryo.pid,
            "kernel": embryo.kernel,
            "cgroup": cgroup,
        }
        send(self.ctl, spawned)

    def userns(self, owner: int, group: int, uid: int) -> int:
        """A user namespace for an idmapped mount (``Mount.owner``): host uid ``owner`` and gid ``group``
        become the session's uid and gid ``uid``; the other id of the pair stays mapped too, as nobody
        (the kernel refuses any write to a file whose uid or gid is unmapped). Made once per mapping by
        a short-lived child, then kept (slot numbers are reused)."""
        key = (owner, group, uid)
        fd = self.usernses.get(key)
        if fd is None:
            uid_map, gid_map = f"{owner} {uid} 1\n", f"{group} {uid} 1\n"
            if owner != group and uid != NOBODY:
                uid_map += f"{group} {NOBODY} 1\n"
                gid_map += f"{owner} {NOBODY} 1\n"
            fd = self.usernses[key] = isolation.userns_fd(uid_map, gid_map)
        return fd

    def take_embryo(self, kind: str, fresh: bool = False) -> Embryo:
        ready = [e for e in self.embryos if e.kind == kind]
        if ready and not fresh:
            embryo = ready[0]
            self.embryos.remove(embryo)
        else:
            embryo = self.make_embryo(kind=kind)
        self.unused.discard(embryo.pid)
        if self.ctx.privileged:  # a spare: back to normal priority before the request
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PGRP, embryo.kernel, 0)
        return embryo

    def mount_workspace(self, slot: int, size_mib: int, uid: int) -> None:
        """A size-limited tmpfs in the zygote's mount namespace: it outlives C, so a restart keeps it."""
        workspace = os.path.join(self.ctx.ws_root, str(slot))
        os.makedirs(workspace, mode=0o700, exist_ok=True)
        if not os.path.ismount(workspace):
            opts = f"size={size_mib}m,mode=0700,uid={uid},gid={uid}"
            isolation.mount("tmpfs", workspace, "tmpfs", NOSUID_NODEV, opts)

    def release(self, slot: int, *, quiet: bool = False) -> None:
        workspace = os.path.join(self.ctx.ws_root, str(slot))
        while os.path.ismount(workspace):  # a mount stacked on another, if ever: remove them all
            try:
                isolation.umount2(workspace, isolation.MNT_DETACH)
            except OSError:
                break
        shutil.rmtree(workspace, ignore_errors=True)
        if not quiet:
            send(self.ctl, {"op": "released", "slot": slot})

    def reap(self) -> None:
        """The interpreter ends first (its init then gets SIGKILL, which ends the namespace); the init is
        reaped last, once every process of the namespace is gone, and only then is ``exit`` sent."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
            embryo = self.kernels.pop(pid, None)
            if embryo is not None:
                if embryo.slot is not None:
                    send(self.ctl, {"op": "status", "slot": embryo.slot, "returncode": rc})
                with contextlib.suppress(OSError):
                    os.kill(embryo.pid, signal.SIGKILL)
                continue
            embryo = self.inits.pop(pid, None)
            if embryo is None:
                continue
            if embryo.cgroup is not None:  # the namespace is gone with its init: the cgroup is empty
                with contextlib.suppress(OSError):
                    embryo.cgroup.destroy()
            if pid in self.unused:  # an embryo died before use
                self.unused.discard(pid)
                if embryo in self.embryos:
                    embryo.chan.close()
                    self.embryos.remove(embryo)
            send(self.ctl, {"op": "exit", "pid": pid, "returncode": rc})

    def shutdown(self) -> None:
        """The host went away: kill every session (each one's init is our child)."""
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


def _enter_private_namespaces(config: dict[str, Any]) -> None:
    if os.geteuid() != 0:  # unprivileged: become root of an own user namespace first
        uid, gid = os.getuid(), os.getgid()
        isolation.unshare(isolation.CLONE_NEWUSER | isolation.CLONE_NEWNS)
        isolation.write_id_maps(uid, gid)
        config["in_userns"] = True
    else:
        isolation.unshare(isolation.CLONE_NEWNS)
    isolation.mount(None, "/", None, isolation.MS_REC | isolation.MS_SLAVE)
    ws_root = os.path.join(str(config["runtime_dir"]), "ws")
    # a tmpfs for the workspaces' mount points: their mkdir and rmdir stay off the host's disk journal
    isolation.mount("tmpfs", ws_root, "tmpfs", NOSUID_NODEV | isolation.MS_NOEXEC, "size=4m,mode=0711")
    isolation.mount(None, ws_root, None, isolation.MS_SHARED)  # workspaces propagate into embryos


def main(argv: list[str]) -> None:
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=int(argv[1]))
    ctl.set_inheritable(False)  # forked sessions keep it until they drop privileges; no exec'd program
    config = json.loads(argv[2])
    isolation.set_death_signal(signal.SIGKILL)
    try:
        if os.geteuid() == 0:
            os.setgroups([])  # no supplementary group of the engine reaches a session's init
        _enter_private_namespaces(config)
        kernel.preload()
        ctx = Context(config)
        ctx.build_template()
    except BaseException as exc:
        send(ctl, {"op": "fatal", "message": f"the zygote could not start: {reason(exc)}"})
        raise
    gc.collect()
    gc.freeze()
    isolation.collapse_anonymous_memory()
    if ctx.privileged:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, ZYGOTE_NICE)
        ctx.nice = os.getpriority(os.PRIO_PROCESS, 0)
    Server(ctl, ctx, int(config.get("embryos", 2)), int(config.get("js_embryos", 0))).run()


if __name__ == "__main__":
    main(sys.argv)
