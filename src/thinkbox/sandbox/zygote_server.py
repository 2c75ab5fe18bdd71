"""The fork server: ``python -m thinkbox.sandbox.zygote_server CONTROL_FD CONFIG_JSON``.

Started by :class:`thinkbox.sandbox.zygote.ZygoteBackend` with a scrubbed environment. At start it
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

**What the zygote never sees**: a session's id, environment and mount paths. Whatever the zygote parses
stays in its heap, and every later session is forked from that heap: requests carry only a slot number
(the session's uid offset and workspace name), limits and mount targets.

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
    {"op": "embryo", "pid": I, "kernel": C}           a prepared, unused session (for idle_pids())

Requests from the host: ``{"op": "spawn", "slot", "limits", "mounts": [{"target", "read_only"}]}`` (+ the
session socket and one fd per mount) and ``{"op": "release", "slot"}``. The host then sends C, over the
session socket, one ``{"type": "setup", "env": {...}}`` frame before the protocol starts.
"""

from __future__ import annotations

import array
import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from thinkbox.sandbox import cgroups, isolation, kernel, rlimits, seccomp, wire
from thinkbox.sandbox.types import Limits

SESSION_NAMESPACES = (
    isolation.CLONE_NEWNS | isolation.CLONE_NEWNET | isolation.CLONE_NEWIPC | isolation.CLONE_NEWUTS
)
DEFAULT_LIMITS = Limits()
DEVICES = ("null", "zero", "full", "random", "urandom")
MAX_MOUNTS = 16
"""Mounts per session: each travels as an O_PATH fd with the spawn request."""
MASKED_PROC_FILES = (
    *("cmdline", "interrupts", "softirqs", "diskstats", "partitions", "swaps", "locks", "modules"),
    *("devices", "execdomains", "consoles", "misc", "dma", "fb", "mtrr", "buddyinfo", "zoneinfo"),
    *("pagetypeinfo", "vmallocinfo", "slabinfo", "iomem", "ioports", "kallsyms", "kcore", "keys"),
    *("key-users", "timer_list", "sched_debug", "latency_stats", "sysrq-trigger", "config.gz"),
    *("kpagecount", "kpageflags", "kpagecgroup"),
)
"""/proc files that tell a session about the host or about other sessions (the kernel's command line,
interrupt and disk counters, other processes' file locks, ...): /dev/null is bound over each one."""
MASKED_PROC_DIRS = ("acpi", "asound", "bus", "driver", "fs", "irq", "pressure", "scsi", "sysvipc", "tty")
"""/proc directories hidden under an empty read-only directory."""
_NOSUID_NODEV = isolation.MS_NOSUID | isolation.MS_NODEV
SPARE_NICE = 19
"""CPU priority of the spare sessions' preparation (the zygote's fork of one, then its setup)."""
ZYGOTE_NICE = -5
"""The zygote serves requests ahead of the sessions it started (root only; sessions run at 0)."""


class Context:
    """What every session's setup needs, prepared once in the zygote before any fork."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.runtime = str(config["runtime_dir"])
        self.instance = str(config["instance"])
        self.template = os.path.join(self.runtime, "template")
        self.root_mnt = os.path.join(self.runtime, "root")
        self.ws_root = os.path.join(self.runtime, "ws")
        self.privileged = os.geteuid() == 0 and not config.get("in_userns", False)
        self.uid_base = int(config.get("uid_base", 0))
        """Sessions run as ``uid_base + slot``; ``uid_base`` itself is every session's init (tini)."""
        self.last_cap = isolation.last_capability()
        self.seccomp_programs = [
            seccomp.compile_program(),
            seccomp.compile_program(seccomp.build_nosuid_filter()),
        ]
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.init_argv = init_argv()
        self.nice = 0
        self.tmp_binds: list[tuple[str, str]] = []
        """Interpreter paths under /tmp (a venv in a checkout there): bound again over each session's /tmp."""
        self.masked_files = [n for n in MASKED_PROC_FILES if os.path.isfile(f"/proc/{n}")]
        self.masked_dirs = [n for n in MASKED_PROC_DIRS if os.path.isdir(f"/proc/{n}")]
        self.null_fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        """The zygote's own (the sessions' inits get it as stdio); closed in every forked embryo."""

    def build_template(self) -> None:
        """The read-only skeleton every session's root is a recursive bind of."""
        t = self.template
        isolation.mount("tmpfs", t, "tmpfs", _NOSUID_NODEV, "size=1m,mode=0755")
        binds: list[tuple[str, str]] = [("/usr", "/usr")]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = "/" + top
            if os.path.islink(path):
                os.symlink(os.readlink(path), t + path)
            elif os.path.isdir(path):
                binds.append((path, path))
        for extra in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime", "/etc/ssl/certs"):
            if os.path.exists(extra):
                binds.append((os.path.realpath(extra), extra))
        for prefix in sorted({os.path.realpath(sys.base_prefix), sys.prefix}):
            if not prefix.startswith("/usr/"):
                binds.append((os.path.realpath(prefix), prefix))
        for src, dst in binds:
            _bind_into(t, src, dst, read_only=True)
        self.tmp_binds = [(src, dst) for src, dst in binds if dst == "/tmp" or dst.startswith("/tmp/")]
        files = {
            "/etc/hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
            "/etc/hostname": "sandbox\n",
            "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        }
        for path, text in files.items():
            with open(t + path, "w") as f:
                f.write(text)
        for name in ("passwd", "group"):
            os.symlink(f"/run/{name}", f"{t}/etc/{name}")
        for d in ("proc", "tmp", "run", "workspace", "dev/shm"):
            os.makedirs(f"{t}/{d}", exist_ok=True)
        for name in DEVICES:
            open(f"{t}/dev/{name}", "w").close()
            isolation.mount(f"/dev/{name}", f"{t}/dev/{name}", None, isolation.MS_BIND)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, f"{t}/dev/{name}")
        flags = isolation.MS_REMOUNT | isolation.MS_BIND | isolation.MS_RDONLY | _NOSUID_NODEV
        isolation.mount(None, t, None, flags)


def init_argv() -> list[str]:
    """pid 1 of each session: tini reaps the orphans and ends with the zygote (-p SIGKILL). It runs as
    ``uid_base`` (no capabilities, not a session's uid: a session can neither signal nor see it)."""
    tini, sleep = shutil.which("tini"), shutil.which("sleep")
    if tini is None or sleep is None:
        raise RuntimeError(
            f"{'tini' if tini is None else 'sleep'} not found on PATH: install it (apt-get install tini; "
            "scripts/setup.sh does), or use --backend bwrap"
        )
    return [tini, "-p", "SIGKILL", "--", sleep, "infinity"]


def _bind_into(root: str, src: str, dst: str, *, read_only: bool) -> None:
    target = root + dst
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "w").close()
    isolation.bind(src, target, read_only=read_only, recursive=True)


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


def _normal_priority(ctx: Context) -> None:
    """Back from a spare's low priority (the zygote renices the group too; this holds if it could not)."""
    if ctx.privileged and os.getpriority(os.PRIO_PROCESS, 0) != 0:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def _session_uid(ctx: Context, req: dict[str, Any]) -> int:
    return ctx.uid_base + int(req["slot"]) if ctx.privileged else 0


def _specialize_root(ctx: Context, req: dict[str, Any], limits: Limits, uid: int, sources: list[int]) -> None:
    r = ctx.root_mnt
    for target in ("/tmp", "/dev/shm"):
        opts = f"size={limits.tmp_mib}m,mode=1777"
        isolation.mount("tmpfs", r + target, "tmpfs", _NOSUID_NODEV, opts)
    for src, dst in ctx.tmp_binds:  # the private /tmp must not hide the interpreter
        _bind_into(r, src, dst, read_only=True)
    with open(r + "/run/passwd", "w") as f:
        f.write(
            f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{uid}:sandbox:/workspace:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
    with open(r + "/run/group", "w") as f:
        f.write(f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n")
    isolation.bind(os.path.join(ctx.ws_root, str(req["slot"])), r + "/workspace", read_only=False)
    mounts = req.get("mounts", ())
    if len(mounts) != len(sources):
        raise ValueError(f"{len(mounts)} mounts but {len(sources)} source fds")
    for m, source in zip(mounts, sources, strict=True):
        own = _reopen_source(source)
        # the workspace is the sandbox's: never follow its symlinks
        fd = isolation.open_beneath(r + "/workspace", m["target"])
        try:
            isolation.mount(
                f"/proc/self/fd/{own}", f"/proc/self/fd/{fd}", None, isolation.MS_BIND | isolation.MS_REC
            )
        finally:
            os.close(fd)
            os.close(own)
            os.close(source)
        # the path was just checked component by component, and no sandbox code runs meanwhile
        isolation.restrict(f"{r}/workspace/{m['target']}", read_only=bool(m["read_only"]), recursive=True)
    os.chdir(r)
    isolation.pivot_root(".", ".")
    isolation.umount2(".", isolation.MNT_DETACH)
    os.chdir("/")
    isolation.sethostname("sandbox")


def _reopen_source(fd: int) -> int:
    """This mount namespace's own fd of the directory that ``fd`` (opened once by the host, for the whole
    session) names: the host's fd lies in another mount namespace, which a bind mount refuses. The path
    is walked without following symlinks and must lead to the very same directory."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    own = isolation.open_nofollow(path)
    a, b = os.fstat(fd), os.fstat(own)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(own)
        raise OSError(0, f"mount source {path!r} changed since the session started")
    return own


# -- the session's interpreter -----------------------------------------------------------------------
def _warm_up() -> None:
    """Run what ``kernel.serve`` runs before its hello once, on a throwaway socket, while the embryo waits.

    The first touch of a page shared with the zygote copies it (and its first use of a thread stack
    maps one): paid here, ahead of the request, not while the session starts. No thread outlives this
    (so none escapes the privilege drop and seccomp that come later); fds 0-2, ``sys`` streams and open
    fds are restored.
    """
    before = {int(n) for n in os.listdir("/proc/self/fd") if _is_open(int(n))}  # not listdir's own
    saved = {fd: os.dup(fd) for fd in (0, 1, 2)}
    names = ("stdin", "stdout", "stderr", "__stdin__", "__stdout__", "__stderr__")
    streams = {name: getattr(sys, name) for name in names}
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        kernel.reseed()
        k = kernel.Kernel(a, {"output_bytes": 1})
        k.channel.send({"type": "hello", "protocol": 0, "pid": 0, "python": ""})
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
        for name, stream in streams.items():
            setattr(sys, name, stream)
        a.close()
        b.close()
        for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
            if fd not in before:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _embryo(
    ctx: Context, ctl: socket.socket, chan: socket.socket, cg: cgroups.Cgroup | None, spare: bool
) -> None:
    """The session's interpreter (pid 2 of its pid namespace): prepare what does not depend on the
    request, wait for it, specialize, drop privileges and serve.

    ``spare``: prepared while the zygote was idle (not for a request already waiting); it works at the
    lowest CPU priority, so it never slows a session being started, and is back at normal priority
    before its request is handled.
    """
    try:
        os.setpgid(0, 0)  # its own process group: the zygote renices it, kill(0, ...) stays inside
        # The zygote dies (so did the engine): the session too. Had it died before this line, the
        # request channel would be closed and the embryo would exit at the request instead.
        isolation.set_death_signal(signal.SIGKILL)
        if cg is not None:  # a cgroup migration waits for an RCU grace period: done ahead of the request
            cg.make(DEFAULT_LIMITS)
            cg.add(0)
        isolation.unshare(SESSION_NAMESPACES | isolation.CLONE_NEWCGROUP)
        r = ctx.root_mnt
        # slave, not private: workspaces the zygote mounts later still show up here
        isolation.mount(None, "/", None, isolation.MS_REC | isolation.MS_SLAVE)
        isolation.mount(ctx.template, r, None, isolation.MS_BIND | isolation.MS_REC)
        # hidepid: the session sees only the processes it could ptrace (not its init, uid_base)
        isolation.mount("proc", r + "/proc", "proc", _NOSUID_NODEV | isolation.MS_NOEXEC, "hidepid=2")
        isolation.bind(r + "/proc/sys", r + "/proc/sys", read_only=True, recursive=True)
        for name in ctx.masked_files:
            isolation.mount(ctx.template + "/dev/null", f"{r}/proc/{name}", None, isolation.MS_BIND)
        for name in ctx.masked_dirs:  # the template's own /proc: an empty read-only directory
            isolation.mount(ctx.template + "/proc", f"{r}/proc/{name}", None, isolation.MS_BIND)
        isolation.mount(
            "tmpfs", r + "/run", "tmpfs", _NOSUID_NODEV | isolation.MS_NOEXEC, "size=64k,mode=0755"
        )
        if spare:  # a request already waits for an embryo made on demand: no time to gain
            with contextlib.suppress(Exception):
                _warm_up()
        data, fds = _recv_fds(chan)
        if not data or not fds:  # the zygote is gone or discarded this embryo
            os._exit(0)
        chan.close()
        req = json.loads(data)
        slot = int(req["slot"])
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    sess = socket.socket(fileno=fds[0])
    uid = _session_uid(ctx, req)
    try:
        _normal_priority(ctx)
        limits = Limits.model_validate(req["limits"])
        if cg is not None and limits != DEFAULT_LIMITS:  # the embryo's cgroup has the defaults
            cg.set_limits(limits)
        _specialize_root(ctx, req, limits, uid, fds[1:])
    except BaseException as exc:
        _send(ctl, {"op": "error", "slot": slot, "message": f"sandbox setup failed: {_reason(exc)}"})
        os._exit(1)
    _session_c(ctx, ctl, sess, slot, limits, uid)


def _session_c(
    ctx: Context, ctl: socket.socket, sess: socket.socket, slot: int, limits: Limits, uid: int
) -> None:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _normal_priority(ctx)  # needs CAP_SYS_NICE: before the capabilities go
        isolation.drop_bounding_set(ctx.last_cap)
        if ctx.privileged:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        isolation.clear_capabilities()
        isolation.set_no_new_privs()
        rlimits.apply(limits)
        os.chdir("/workspace")
        for program in ctx.seccomp_programs:
            seccomp.load_program(program)
    except BaseException as exc:
        _send(ctl, {"op": "error", "slot": slot, "message": f"dropping privileges failed: {_reason(exc)}"})
        os._exit(1)
    ctl.close()
    try:
        # The session's environment comes from the host over the session's own socket, never through
        # the zygote: what the zygote parses stays in its heap, which every later session inherits.
        setup = wire.recv_frame(sess)
        if setup is None or setup.get("type") != "setup":
            raise ValueError(f"expected the session's setup frame, got {setup!r}")
        kernel.serve(sess, {"output_bytes": limits.output_bytes, "env": setup.get("env") or {}})
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


# -- the server loop ----------------------------------------------------------------------------------
class Embryo:
    """A session prepared ahead of its request (like Android's USAP pool): its init, pid 1 of a new pid
    namespace, and its interpreter, pid 2, both children of the zygote."""

    def __init__(self, pid: int, kernel: int, chan: socket.socket, cg: cgroups.Cgroup | None) -> None:
        self.pid = pid
        self.kernel = kernel
        self.chan = chan
        self.cgroup = cg
        self.slot: int | None = None


class Server:
    def __init__(self, ctl: socket.socket, ctx: Context, embryos: int) -> None:
        self.ctl = ctl
        self.ctx = ctx
        self.target = embryos
        self.embryos: list[Embryo] = []
        self.unused: set[int] = set()
        self.inits: dict[int, Embryo] = {}
        self.kernels: dict[int, Embryo] = {}
        self.counter = 0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.ctl.setblocking(False)
        _send(self.ctl, {"op": "ready", "pid": os.getpid()})
        while True:
            timeout = 0.0 if len(self.embryos) < self.target else None
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
            if not ready and len(self.embryos) < self.target:  # idle: prepare the next session
                with contextlib.suppress(OSError):
                    self.embryos.append(self.make_embryo(spare=True))

    def serve_requests(self) -> bool:
        while True:
            try:
                data, fds = _recv_fds(self.ctl)
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
                _send(self.ctl, {"op": "error", "slot": req.get("slot"), "message": msg, "no_process": True})

    def make_embryo(self, spare: bool = False) -> Embryo:
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
                        _embryo(self.ctx, self.ctl, theirs, cg, spare)
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
        embryo = Embryo(init, pid, ours, cg)
        self.unused.add(init)
        self.inits[init] = embryo
        self.kernels[pid] = embryo
        if spare:  # one made on demand is taken at once
            _send(self.ctl, {"op": "embryo", "pid": init, "kernel": pid})
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
            if len(fds) != 1 + len(req.get("mounts", ())):
                raise ValueError(f"{len(fds)} fds for {len(req.get('mounts', ()))} mounts")
            self.mount_workspace(slot, int(req["limits"]["workspace_mib"]), _session_uid(self.ctx, req))
            embryo = self.take_embryo()
            try:
                socket.send_fds(embryo.chan, [data], fds)
            except OSError:  # that embryo died meanwhile: make a fresh one
                embryo.chan.close()
                embryo = self.take_embryo(fresh=True)
                socket.send_fds(embryo.chan, [data], fds)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            msg = f"session setup failed in the zygote: {_reason(exc)}"
            _send(self.ctl, {"op": "error", "slot": slot, "message": msg, "no_process": True})
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
        _send(self.ctl, spawned)

    def take_embryo(self, fresh: bool = False) -> Embryo:
        embryo = self.embryos.pop(0) if self.embryos and not fresh else self.make_embryo()
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
            isolation.mount("tmpfs", workspace, "tmpfs", _NOSUID_NODEV, opts)

    def release(self, slot: int) -> None:
        workspace = os.path.join(self.ctx.ws_root, str(slot))
        with contextlib.suppress(OSError):
            isolation.umount2(workspace, isolation.MNT_DETACH)
        shutil.rmtree(workspace, ignore_errors=True)
        _send(self.ctl, {"op": "released", "slot": slot})

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
                    _send(self.ctl, {"op": "status", "slot": embryo.slot, "returncode": rc})
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
            _send(self.ctl, {"op": "exit", "pid": pid, "returncode": rc})

    def shutdown(self) -> None:
        """The host went away: kill every session (each one's init is our child)."""
        with contextlib.suppress(OSError), open(f"/proc/self/task/{os.getpid()}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One packet and its fds, close-on-exec from the start (``socket.recv_fds`` ignores its ``flags``
    argument before Python 3.12, so recvmsg is called directly)."""
    itemsize = array.array("i").itemsize
    data, ancdata, _, _ = sock.recvmsg(
        65536, socket.CMSG_LEN((1 + MAX_MOUNTS) * itemsize), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % itemsize)])
    return data, list(fds)


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
    isolation.mount("tmpfs", ws_root, "tmpfs", _NOSUID_NODEV | isolation.MS_NOEXEC, "size=4m,mode=0711")
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
        _send(ctl, {"op": "fatal", "message": f"the zygote could not start: {_reason(exc)}"})
        raise
    gc.collect()
    gc.freeze()
    isolation.collapse_anonymous_memory()
    if ctx.privileged:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, ZYGOTE_NICE)
        ctx.nice = os.getpriority(os.PRIO_PROCESS, 0)
    Server(ctl, ctx, int(config.get("embryos", 2))).run()


if __name__ == "__main__":
    main(sys.argv)
