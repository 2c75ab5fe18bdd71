"""What each session of the fork server does before it runs code, in the forked process ("embryo"): the
template root every session starts from, the namespaces and mounts prepared ahead of the request, then,
once the request came, the session's own root, the privilege drop and the kernel. The order and the
reasons are in :mod:`thinkbox.sandbox.zygote.server`'s docstring; what each step stops, docs/security.md.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from thinkbox.sandbox.confine import cgroups, isolation, rlimits, seccomp
from thinkbox.sandbox.inside import engines, kernel, wire
from thinkbox.sandbox.types import MAX_MOUNTS, MAX_OWNERS, Limits

SESSION_NAMESPACES = (
    isolation.CLONE_NEWNS | isolation.CLONE_NEWNET | isolation.CLONE_NEWIPC | isolation.CLONE_NEWUTS
)
DEFAULT_LIMITS = Limits()
DEVICES = ("null", "zero", "full", "random", "urandom")
MAX_FDS = 1 + MAX_MOUNTS + MAX_OWNERS
"""A spawn request's fds: the session socket, one per distinct mount source, one user namespace per owner
(one SCM_RIGHTS message; the kernel allows 253)."""
MAX_PACKET = 64 * 1024
MASKED_PROC_FILES = (
    *("cmdline", "interrupts", "softirqs", "diskstats", "partitions", "swaps", "locks", "modules"),
    *("devices", "buddyinfo", "zoneinfo", "pagetypeinfo", "vmallocinfo", "slabinfo", "iomem", "ioports"),
    *("kallsyms", "kcore", "keys", "key-users", "timer_list", "sched_debug", "latency_stats"),
    *("sysrq-trigger", "config.gz", "mtrr", "kpagecount", "kpageflags", "kpagecgroup"),
)
"""/proc files that tell a session about the host or about other sessions (the kernel's command line,
interrupt and disk counters, other processes' file locks, ...): /dev/null is bound over each one that
others may read or write (a file only root may read needs no cover: the session is never root)."""
MASKED_PROC_DIRS = ("acpi", "bus", "irq", "pressure", "scsi")
"""/proc directories hidden under an empty read-only directory."""
NOSUID_NODEV = isolation.MS_NOSUID | isolation.MS_NODEV
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
        self.masked_files = [n for n in MASKED_PROC_FILES if _open_to_others(f"/proc/{n}")]
        self.masked_dirs = [n for n in MASKED_PROC_DIRS if os.path.isdir(f"/proc/{n}")]
        self.null_fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        """The zygote's own (the sessions' inits get it as stdio); closed in every forked embryo."""

    def build_template(self) -> None:
        """The read-only skeleton every session's root is a recursive bind of."""
        t = self.template
        isolation.mount("tmpfs", t, "tmpfs", NOSUID_NODEV, "size=1m,mode=0755")
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
        flags = isolation.MS_REMOUNT | isolation.MS_BIND | isolation.MS_RDONLY | NOSUID_NODEV
        isolation.mount(None, t, None, flags)


def _open_to_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o006)
    except OSError:
        return False


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


def send(ctl: socket.socket, msg: dict[str, Any]) -> None:
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


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _normal_priority(ctx: Context) -> None:
    """Back from a spare's low priority (the zygote renices the group too; this holds if it could not)."""
    if ctx.privileged and os.getpriority(os.PRIO_PROCESS, 0) != 0:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def session_uid(ctx: Context, req: dict[str, Any]) -> int:
    return ctx.uid_base + int(req["slot"]) if ctx.privileged else 0


def _read_mounts(sess: socket.socket) -> list[dict[str, Any]]:
    """The session's mounts, the first frame on its socket: sent by the host to this process only, so
    that no mount target or hidden path (a tenant's or a user's name) ever reaches the zygote's heap."""
    frame = wire.recv_frame(sess)
    if frame is None or frame.get("type") != "mounts" or not isinstance(frame.get("mounts"), list):
        raise ValueError("expected the session's mounts first on its socket")
    return list(frame["mounts"])


def _specialize_root(
    ctx: Context,
    req: dict[str, Any],
    limits: Limits,
    uid: int,
    sources: list[int],
    mounts: list[dict[str, Any]],
) -> None:
    r = ctx.root_mnt
    for target in ("/tmp", "/dev/shm"):
        opts = f"size={limits.tmp_mib}m,mode=1777"
        isolation.mount("tmpfs", r + target, "tmpfs", NOSUID_NODEV, opts)
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
    count = int(req.get("sources", 0))
    if len(sources) != count + len(req.get("owners", ())):
        raise ValueError(f"{len(sources)} fds for {count} mount sources and the owners {req.get('owners')}")
    own: list[int] = []
    try:
        for fd in sources[:count]:
            own.append(_reopen_source(fd))
        for m in mounts:
            _mount(ctx, r + "/workspace", m, own[int(m["source"])], sources[count:])
    finally:
        for fd in own + sources:
            os.close(fd)
    os.chdir(r)
    isolation.pivot_root(".", ".")
    isolation.umount2(".", isolation.MNT_DETACH)
    os.chdir("/")
    isolation.sethostname("sandbox")


def _mount(ctx: Context, workspace: str, m: dict[str, Any], source: int, userns: list[int]) -> None:
    """One of the caller's mounts, then its covers (``Mount.hide``): targets opened beneath the
    workspace, never through its symlinks; the path is then used for the flags, checked component by
    component just before, with no sandbox code running meanwhile."""
    target, read_only = str(m["target"]), bool(m["read_only"])
    fd = isolation.open_beneath(workspace, target)
    try:
        if m.get("owner") is None:
            isolation.mount(
                f"/proc/self/fd/{source}", f"/proc/self/fd/{fd}", None, isolation.MS_BIND | isolation.MS_REC
            )
            isolation.restrict(f"{workspace}/{target}", read_only=read_only, recursive=True)
        else:
            what = f"the mount at /workspace/{target}"
            isolation.bind_idmapped(source, fd, userns[int(m["owner"])], read_only=read_only, what=what)
    finally:
        os.close(fd)
    for hidden in m.get("hide", ()):
        try:
            fd = isolation.open_beneath(workspace, str(hidden), create=False)
        except FileNotFoundError:
            continue  # nothing there to hide
        try:  # the template's own /proc: an empty read-only directory
            isolation.mount(ctx.template + "/proc", f"/proc/self/fd/{fd}", None, isolation.MS_BIND)
        finally:
            os.close(fd)
        isolation.restrict(f"{workspace}/{hidden}", read_only=True, recursive=False)


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


def _prestart_node(ctx: Context) -> tuple[engines.NodeEngine, tuple[int, int]]:
    """Node for a JavaScript session, started before the request (it takes longer to start than a whole
    Python session): in the session's namespaces and cgroup, with NO_NEW_PRIVS and the session's seccomp
    filters, and a bounding set of CAP_SETUID and CAP_SETGID only (none unprivileged), so that it holds
    no other capability even as root. Once the request came, the embryo sets its rlimits and tells it to
    become the session's user (:func:`_confine_node`). Its stdout and stderr are pipes for the kernel."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    keep = frozenset({isolation.CAP_SETUID, isolation.CAP_SETGID}) if ctx.privileged else frozenset()

    def preexec() -> None:
        null = os.open("/dev/null", os.O_RDONLY)
        for fd, target in ((null, 0), (out_w, 1), (err_w, 2)):
            os.dup2(fd, target)
        os.chdir("/")  # pivot_root moves it into the session's root with the embryo
        isolation.set_no_new_privs()
        isolation.drop_bounding_set(ctx.last_cap, keep)
        for program in ctx.seccomp_programs:
            seccomp.load_program(program)

    try:
        engine = engines.NodeEngine.spawn(DEFAULT_LIMITS.memory_mib, preexec)
    finally:
        os.close(out_w)
        os.close(err_w)
    engine.ping()  # Node is up: the embryo is worth as much as a Python one now
    return engine, (out_r, err_r)


def _confine_node(ctx: Context, engine: engines.NodeEngine, limits: Limits, uid: int) -> None:
    """The pre-started Node gets the session's rlimits and priority, then drops to its uid (checked from
    here, through /proc, before the embryo drops its own privileges)."""
    for res, value in rlimits.table(limits).items():
        resource.prlimit(engine.pid, res, (value, value))
    if ctx.privileged:
        os.setpriority(os.PRIO_PROCESS, engine.pid, 0)
        engine.confine(uid, uid)
    else:  # root of the zygote's user namespace, exec'd with an empty bounding set: no capability
        engines.check_dropped(engine.pid, 0)


def run_embryo(
    ctx: Context,
    ctl: socket.socket,
    chan: socket.socket,
    cg: cgroups.Cgroup | None,
    spare: bool,
    language: str = "py",
    init: int = 0,
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
        isolation.loopback_up()  # the session's own loopback only: the egress relay listens there
        r = ctx.root_mnt
        # slave, not private: workspaces the zygote mounts later still show up here
        isolation.mount(None, "/", None, isolation.MS_REC | isolation.MS_SLAVE)
        isolation.mount(ctx.template, r, None, isolation.MS_BIND | isolation.MS_REC)
        # hidepid: the session sees only the processes it could ptrace (not its init, uid_base)
        isolation.mount("proc", r + "/proc", "proc", NOSUID_NODEV | isolation.MS_NOEXEC, "hidepid=2")
        isolation.bind(r + "/proc/sys", r + "/proc/sys", read_only=True, recursive=True)
        for name in ctx.masked_files:
            isolation.mount(ctx.template + "/dev/null", f"{r}/proc/{name}", None, isolation.MS_BIND)
        for name in ctx.masked_dirs:  # the template's own /proc: an empty read-only directory
            isolation.mount(ctx.template + "/proc", f"{r}/proc/{name}", None, isolation.MS_BIND)
        isolation.mount(
            "tmpfs", r + "/run", "tmpfs", NOSUID_NODEV | isolation.MS_NOEXEC, "size=64k,mode=0755"
        )
        if spare:  # a request already waits for an embryo made on demand: no time to gain
            with contextlib.suppress(Exception):
                _warm_up()
        node = _prestart_node(ctx) if language == "js" else None
        if node is not None and spare:  # the host counts it as ready only now
            send(ctl, {"op": "warm", "pid": init})
        data, fds = recv_fds(chan)
        if not data or not fds:  # the zygote is gone or discarded this embryo
            os._exit(0)
        chan.close()
        req = json.loads(data)
        slot = int(req["slot"])
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    sess = socket.socket(fileno=fds[0])
    uid = session_uid(ctx, req)
    try:
        _normal_priority(ctx)
        limits = Limits.model_validate(req["limits"])
        if cg is not None and limits != DEFAULT_LIMITS:  # the embryo's cgroup has the defaults
            cg.set_limits(limits)
        _specialize_root(ctx, req, limits, uid, fds[1:], _read_mounts(sess))
        if node is not None:
            _confine_node(ctx, node[0], limits, uid)
    except BaseException as exc:
        send(ctl, {"op": "error", "slot": slot, "message": f"sandbox setup failed: {reason(exc)}"})
        os._exit(1)
    options: dict[str, Any] = {"language": req.get("language", "py"), "memory_mib": limits.memory_mib}
    if node is not None:
        options.update(engine=node[0], engine_fds=node[1])
    _session_c(ctx, ctl, sess, slot, limits, uid, options)


def _session_c(
    ctx: Context,
    ctl: socket.socket,
    sess: socket.socket,
    slot: int,
    limits: Limits,
    uid: int,
    options: dict[str, Any],
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
        send(ctl, {"op": "error", "slot": slot, "message": f"dropping privileges failed: {reason(exc)}"})
        os._exit(1)
    ctl.close()
    try:
        # The session's environment comes from the host over the session's own socket, never through
        # the zygote: what the zygote parses stays in its heap, which every later session inherits.
        setup = wire.recv_frame(sess)
        if setup is None or setup.get("type") != "setup":
            raise ValueError(f"expected the session's setup frame, got {setup!r}")
        env = setup.get("env") or {}
        options.update(output_bytes=limits.output_bytes, env=env, cwd=setup.get("cwd"))
        kernel.serve(sess, options)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One packet and its fds, close-on-exec from the start (``socket.recv_fds`` ignores its ``flags``
    argument before Python 3.12, so recvmsg is called directly)."""
    itemsize = array.array("i").itemsize
    data, ancdata, _, _ = sock.recvmsg(
        MAX_PACKET, socket.CMSG_LEN(MAX_FDS * itemsize), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % itemsize)])
    return data, list(fds)
