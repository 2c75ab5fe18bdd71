"""The bubblewrap backend: one ``bwrap`` process per session.

The conservative fallback where the zygote cannot run, and the baseline of ``thinkbox bench sandbox``.
Each session is a fresh interpreter (``python -m thinkbox.sandbox.inside.launch``) started by ``bwrap`` with:

- every namespace unshared (no network), a user namespace with a distinct uid per session, no capabilities,
  NO_NEW_PRIVS, the seccomp filter of :mod:`thinkbox.sandbox.confine.seccomp` (``--seccomp FD``);
- a read-only root made of ``/usr`` (and the merged-usr links), the Python installation and the virtualenv
  at their own paths, ``/etc/ld.so.cache``, ``/etc/alternatives``, ``/etc/fonts`` and a private copy of the
  kernel's five stdlib-only files; never the host ``/``, ``/root``, ``/home``, ``/run`` or the project
  directory;
- a size-limited tmpfs as ``/workspace`` (disk fill ends in ENOSPC), a private ``/tmp`` and ``/dev/shm``,
  and the caller's :class:`~thinkbox.sandbox.types.Mount` s under ``/workspace``;
- rlimits and a cgroup (:mod:`~thinkbox.sandbox.confine.rlimits`,
  :mod:`~thinkbox.sandbox.confine.cgroups`) applied to ``bwrap`` before it execs, so every process of
  the session inherits them;
- ``bwrap`` itself started with an empty environment: a secret in the engine's environment is not in
  ``/proc/1/environ`` of the sandbox.

The workspace lives inside the ``bwrap`` process, so :meth:`Session.restart` starts with an empty one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from thinkbox.errors import ConfigError, SandboxUnavailable, SessionStartError
from thinkbox.sandbox import inside, procs
from thinkbox.sandbox.backend import BackendInfo, ExitInfo, KernelProcess, SandboxBackend
from thinkbox.sandbox.bwrap import userns
from thinkbox.sandbox.bwrap.mounts import Sources
from thinkbox.sandbox.confine import cgroups, rlimits, uids
from thinkbox.sandbox.types import WORKSPACE, Limits, MiB, SessionConfig, check_language

log = logging.getLogger(__name__)

RUNTIME_MOUNT = "/opt/thinkbox"
"""Where the kernel's files appear inside the sandbox (put on PYTHONPATH)."""
MPL_DIR = "/tmp/matplotlib"
INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`) or choose another backend "
    "(THINKBOX_SANDBOX__BACKEND / --backend)"
)
KILL_TIMEOUT_S = 5.0
_OUTPUT_KEEP = 8 * 1024
_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_UNSHARE = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
"""``--unshare-all`` but the user namespace, which is bwrap's own or, as root, the session's (userns.py)."""
_SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "PYTHONPATH": RUNTIME_MOUNT,
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": MPL_DIR,
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_PR_SET_PDEATHSIG = 1
_PROC_HIDDEN = ("sys", "irq", "bus", "fs", "acpi", "scsi", "driver", "tty", "sysvipc", "pressure")
"""/proc directories hidden under an empty read-only tmpfs. bwrap maps the session's uid to the caller's:
when the engine runs as root that is kernel uid 0, for which files such as /proc/sys/kernel/core_pattern
or /proc/irq/*/smp_affinity are writable without any capability (bwrap leaves them exposed because their
directories are not writable)."""
_PROC_COVERS = [
    arg
    for name in _PROC_HIDDEN
    if os.path.isdir(f"/proc/{name}")
    for arg in ("--size", "4096", "--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}")
] + [
    arg
    for name in ("mtrr",)
    if os.path.exists(f"/proc/{name}")
    for arg in ("--ro-bind", "/dev/null", f"/proc/{name}")
]


class BwrapKernel(KernelProcess):
    """One ``bwrap`` process: its init (pid 1 inside) and, under that, the interpreter."""

    def __init__(
        self, proc: asyncio.subprocess.Process, sock: socket.socket, cgroup: cgroups.Cgroup | None
    ) -> None:
        self.sock = sock
        self.proc = proc
        self.cgroup = cgroup
        self.init_pid: int | None = None
        """Host pid of bwrap's init (pid 1 of the session's pid namespace)."""
        self.interpreter_pid: int | None = None
        """Host pid of the interpreter (pid 2 inside)."""
        self.output = bytearray()
        """The first bytes bwrap and the interpreter wrote before the kernel took over fds 1 and 2."""
        self.killed_by_us = False
        self._tasks: list[asyncio.Task[None]] = []

    def _watch(self, status_fd: int) -> None:
        self._tasks.append(asyncio.create_task(self._read_status(status_fd)))
        self._tasks.append(asyncio.create_task(self._read_output()))

    async def _read_status(self, status_fd: int) -> None:
        """bwrap's --json-status-fd: the init's pid first; then find the interpreter under it."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(status_fd, "rb", 0)
        )
        try:
            line = await reader.readline()
            with contextlib.suppress(ValueError):
                self.init_pid = int(json.loads(line).get("child-pid")) if line else None
            if self.init_pid is not None:
                for _ in range(5000):  # the init forks the interpreter right after mounting
                    children = procs.children(self.init_pid)
                    if children:
                        self.interpreter_pid = children[0]
                        break
                    if self.proc.returncode is not None:
                        break
                    await asyncio.sleep(0.002)
            while await reader.readline():
                pass
        finally:
            transport.close()

    async def _read_output(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            if len(self.output) < _OUTPUT_KEEP:
                self.output += chunk[: _OUTPUT_KEEP - len(self.output)]

    def interrupt(self) -> None:
        if self.interpreter_pid is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.interpreter_pid, signal.SIGINT)

    async def kill(self) -> None:
        self.killed_by_us = self.killed_by_us or self.proc.returncode is None
        if self.init_pid is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.init_pid, signal.SIGKILL)  # ends the whole pid namespace
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
        try:
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await self.proc.wait()
                for task in self._tasks:
                    with contextlib.suppress(Exception):
                        await task
        except TimeoutError:
            log.warning("bwrap %d did not end within %.0f s of SIGKILL", self.proc.pid, KILL_TIMEOUT_S)
        if self.cgroup is not None:
            try:
                self.cgroup.destroy()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", self.cgroup.name, exc)
            self.cgroup = None

    async def wait(self) -> ExitInfo:
        code = procs.from_init_status(await self.proc.wait())
        reason = ""
        if self.killed_by_us:
            reason = "it was killed by thinkbox"
        elif code not in (0, None) and self.output:
            text = self.output.decode("utf-8", "replace").strip()
            reason = f"bwrap or the interpreter ended with status {code}: {text[-1500:]}"
        return ExitInfo(code, reason)

    def host_pids(self) -> list[int]:
        pids = self.cgroup.pids() if self.cgroup is not None else []
        known = [self.proc.pid, self.init_pid, self.interpreter_pid]
        return sorted(set(pids) | {p for p in known if p is not None})


class _ChildSetup:
    """Runs in the forked child just before it execs bwrap: cgroup, rlimits, death signal, new session."""

    def __init__(self, cgroup: cgroups.Cgroup | None, limits: Limits, gid: int | None = None) -> None:
        self.cgroup = cgroup
        self.limits = limits
        self.gid = gid
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.prctl = libc.prctl

    def __call__(self) -> None:
        os.setsid()  # Ctrl-C in the engine's terminal must not reach bwrap
        self.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if self.cgroup is not None:
            self.cgroup.add(0)
        rlimits.apply(self.limits)
        if self.gid is not None:  # the session's host gid (Mount.owner), and no supplementary groups
            os.setgroups([])
            os.setresgid(self.gid, self.gid, self.gid)


class BwrapBackend(SandboxBackend):
    """Sessions in ``bwrap`` sandboxes, one process tree per session."""

    name: ClassVar[str] = "bwrap"

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        python: str | None = None,
        preload: bool = True,
        seccomp: bool = True,
        uid_base: int = 20000,
        **_: Any,
    ) -> None:
        self._bwrap_path = bwrap
        self._python = python or sys.executable
        self._preload = preload
        self._use_seccomp = seccomp
        self._uid_base = uid_base
        self._runtime: Path | None = None
        self._bwrap = ""
        self._base_args: list[str] = []
        self._mpl_files: list[Path] = []
        self._seq = 0
        self._live: dict[str, BwrapKernel] = {}
        self._sources: dict[str, Sources] = {}
        self._start_lock = asyncio.Lock()
        self._owners: uids.UidBlock | None = None

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            isolation="bubblewrap: user/pid/mount/net/ipc/uts/cgroup namespaces, seccomp, rlimits, cgroup",
            details={"bwrap": self._bwrap, "python": self._python, "runtime": str(self._runtime or "")},
        )

    # -- start ------------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._runtime is not None:
                return
            if sys.platform != "linux":
                raise SandboxUnavailable(f"the bwrap backend needs Linux; {INSTALL_HINT}")
            found = self._bwrap_path or shutil.which("bwrap") or "/usr/bin/bwrap"
            if not os.access(found, os.X_OK):
                raise SandboxUnavailable(f"bubblewrap is not installed ({found} not found); {INSTALL_HINT}")
            self._bwrap = found
            runtime = Path(tempfile.mkdtemp(prefix="thinkbox-bwrap-"))
            try:
                if self._owners is None:
                    self._owners = await asyncio.to_thread(userns.owners)
                await asyncio.to_thread(self._prepare_runtime, runtime)
                self._runtime = runtime
                self._base_args = self._root_args()
                await self._probe()
            except BaseException:
                self._runtime = None
                shutil.rmtree(runtime, ignore_errors=True)
                raise

    def _prepare_runtime(self, runtime: Path) -> None:
        """Copy the kernel's files, compile the seccomp filter and build matplotlib's font cache once."""
        inside.install(runtime)
        (runtime / "empty").mkdir(mode=0o555)  # what covers a hidden path (Mount.hide)
        if self._use_seccomp:
            try:
                from thinkbox.sandbox.confine import seccomp

                with open(runtime / "seccomp.bpf", "wb") as f:
                    seccomp.export_bpf(f)
                with open(runtime / "nosuid.bpf", "wb") as f:
                    seccomp.export_bpf(f, seccomp.build_nosuid_filter())
            except (ImportError, OSError, RuntimeError) as exc:
                raise SandboxUnavailable(
                    f"the seccomp filter could not be built ({exc}); install libseccomp "
                    "(`apt-get install libseccomp2`) and pyseccomp"
                ) from None
        mpl = runtime / "matplotlib"
        mpl.mkdir()
        if self._preload:
            env = {
                "MPLCONFIGDIR": str(mpl),
                "HOME": str(runtime),
                "PATH": "/usr/bin:/bin",
                "MPLBACKEND": "Agg",
            }
            proc = subprocess.run(
                [self._python, "-c", "import matplotlib.font_manager"],
                env=env,
                capture_output=True,
                check=False,
                timeout=300,
            )
            if proc.returncode != 0:
                log.warning(
                    "matplotlib font cache not built: %s", proc.stderr.decode(errors="replace")[-500:]
                )
        self._mpl_files = sorted(p for p in mpl.iterdir() if p.is_file() and p.suffix == ".json")

    def _root_args(self) -> list[str]:
        """The read-only root: what the interpreter needs at the same paths as on the host, nothing more."""
        assert self._runtime is not None
        args: list[str] = ["--ro-bind", "/usr", "/usr"]
        for path in _USR_LINKS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        seen = ["/usr"]
        for prefix in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(self._python))):
            real = os.path.realpath(prefix)
            if real in ("/", "") or any(real == s or real.startswith(s + "/") for s in seen):
                continue
            args += ["--ro-bind", real, real]
            seen.append(real)
        for path in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/fonts"):
            args += ["--ro-bind-try", path, path]
        args += ["--ro-bind", str(self._runtime), RUNTIME_MOUNT]
        return args

    async def _probe(self) -> None:
        """Start one empty sandbox so a broken setup is reported at start, not as a session failure."""
        argv = [self._bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", *self._base_args]
        argv += ["--proc", "/proc", "--dev", "/dev", self._python, "-S", "-c", "pass"]
        proc = await asyncio.create_subprocess_exec(
            *argv, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap cannot start a sandbox here (status {proc.returncode}: "
                f"{out.decode(errors='replace').strip()[-500:]}); it needs user namespaces "
                f"(sysctl kernel.unprivileged_userns_clone=1 when not root); {INSTALL_HINT}"
            )

    def _argv(
        self, uid: int, limits: Limits, mount_args: list[str], files: dict[str, int], userns: int | None
    ) -> list[str]:
        """bwrap's command line up to the interpreter: namespaces, identity, environment, filesystem."""
        argv = [self._bwrap, "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        argv += _UNSHARE + (["--unshare-user"] if userns is None else ["--userns", str(userns)])
        argv += [
            "--uid",
            str(uid),
            "--gid",
            str(uid),
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        for key, value in _SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        argv += self._base_args
        argv += ["--proc", "/proc", *_PROC_COVERS, "--dev", "/dev"]
        argv += ["--size", str(limits.tmp_mib * MiB), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
        argv += ["--size", str(limits.workspace_mib * MiB), "--tmpfs", WORKSPACE]
        argv += ["--size", str(limits.tmp_mib * MiB), "--tmpfs", "/tmp", "--dir", MPL_DIR]
        argv += _binds_under_tmp(self._base_args)
        for name, fd in files.items():
            if name.endswith(".json"):
                argv += ["--file", str(fd), f"{MPL_DIR}/{name}"]
        argv += [*mount_args, "--remount-ro", "/", "--chdir", WORKSPACE]
        for name in ("seccomp.bpf", "nosuid.bpf"):
            if name in files:
                argv += ["--add-seccomp-fd", str(files[name])]
        return argv

    # -- sessions ---------------------------------------------------------------------------------
    async def spawn(self, session_id: str, config: SessionConfig) -> KernelProcess:
        await self.start()
        limits = config.limits
        if limits.network:
            raise ConfigError("sessions have no network: set Limits.network to False")
        check_language(config)
        sources = self._sources.get(session_id)
        if sources is None or sources.spec != config.mounts:
            if sources is not None:
                sources.close()
            assert self._runtime is not None
            sources = self._sources[session_id] = Sources(config.mounts, self._runtime / "empty")
        mount_args = sources.args + sources.cover_args()
        old = self._live.pop(session_id, None)
        if old is not None:
            await old.kill()
        self._seq += 1
        try:
            cgroup = cgroups.Cgroup.create(f"bwrap-{os.getpid()}-{session_id}-{self._seq}", limits)
        except OSError as exc:
            raise SessionStartError(f"could not create the session's cgroup: {exc}") from None
        parent_sock, child_sock = socket.socketpair()
        status_r, status_w = os.pipe()
        files: dict[str, int] = {}
        try:
            assert self._runtime is not None
            filters = (
                [self._runtime / "seccomp.bpf", self._runtime / "nosuid.bpf"] if self._use_seccomp else []
            )
            for path in filters + self._mpl_files:
                files[path.name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            uid = self._uid_base + self._seq % 40000
            if self._owners is not None:  # as root: a namespace of the session's own (userns.py)
                owner = self._owners.base + self._seq % uids.BLOCK_SIZE
                gid = os.getegid() if sources.gid is None else sources.gid
                files["userns"] = await asyncio.to_thread(userns.make, owner, uid, 0, gid)
            argv = self._argv(uid, limits, mount_args, files, files.get("userns"))
            argv += ["--json-status-fd", str(status_w), self._python, "-m", "thinkbox.sandbox.inside.launch"]
            options = {
                "output_bytes": limits.output_bytes,
                "env": config.env,
                "preload": self._preload,
                "cwd": config.cwd_in_workspace(),
                "language": config.language,
                "memory_mib": limits.memory_mib,
            }
            argv += [str(child_sock.fileno()), json.dumps(options)]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=[child_sock.fileno(), status_w, *files.values(), *sources.fds],
                preexec_fn=_ChildSetup(cgroup, limits, sources.gid),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            parent_sock.close()
            os.close(status_r)
            if cgroup is not None:
                cgroup.destroy()
            raise SessionStartError(f"could not start bwrap ({self._bwrap}): {exc}; {INSTALL_HINT}") from None
        finally:
            child_sock.close()
            os.close(status_w)
            for fd in files.values():
                os.close(fd)
        kernel = BwrapKernel(proc, parent_sock, cgroup)
        kernel._watch(status_r)
        self._live[session_id] = kernel
        return kernel

    async def release(self, session_id: str) -> None:
        kernel = self._live.pop(session_id, None)
        if kernel is not None:
            await kernel.kill()
        sources = self._sources.pop(session_id, None)
        if sources is not None:
            sources.close()

    async def aclose(self) -> None:
        live, self._live = list(self._live.values()), {}
        for kernel in live:
            with contextlib.suppress(Exception):
                await kernel.kill()
        for sources in self._sources.values():
            sources.close()
        self._sources.clear()
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None
        if self._owners is not None:
            self._owners.release()
            self._owners = None


def _binds_under_tmp(args: list[str]) -> list[str]:
    """The read-only binds whose target lies under /tmp (a venv in a checkout there), to repeat after the
    session's private /tmp is mounted: otherwise that tmpfs would hide the interpreter."""
    out: list[str] = []
    for i in range(len(args) - 2):
        if args[i] in ("--ro-bind", "--ro-bind-try") and (
            args[i + 2] == "/tmp" or args[i + 2].startswith("/tmp/")
        ):
            out += args[i : i + 3]
    return out
