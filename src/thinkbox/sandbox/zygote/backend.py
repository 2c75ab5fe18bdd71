"""The default sandbox backend: sessions forked from a fork server ("zygote") that preloaded the libraries.

The host side. :meth:`ZygoteBackend.start` launches ``python -m thinkbox.sandbox.zygote.server`` with a
scrubbed environment and a control socket; :meth:`ZygoteBackend.spawn` sends it the session's socket and
limits and gets back the host pids of the session's init (pid 1 of its pid namespace, tini) and of its
interpreter. What happens inside is described in :mod:`thinkbox.sandbox.zygote.server` (sessions are
forked ahead of time as "embryos" and specialized per request). Signals go through pidfds: SIGINT to the
interpreter, SIGKILL to the init (which ends the whole namespace); the zygote reaps both and reports how
the interpreter ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import thinkbox
from thinkbox.errors import ConfigError, SandboxUnavailable, SessionStartError
from thinkbox.sandbox.backend import BackendInfo, ExitInfo, KernelProcess, SandboxBackend
from thinkbox.sandbox.confine import cgroups, uids
from thinkbox.sandbox.inside import wire
from thinkbox.sandbox.types import SessionConfig, check_language
from thinkbox.sandbox.zygote.kernel import KILL_TIMEOUT_S, Embryos, Live, Pending, Slot, ZygoteKernel
from thinkbox.sandbox.zygote.runtime import (
    default_cache_dir,
    default_runtime_root,
    log_tail,
    open_mounts,
    remove_runtime,
    remove_stale_instances,
)

log = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(thinkbox.__file__).resolve().parents[1])
"""Where the host imported thinkbox from: the fork server imports the same."""
START_TIMEOUT_S = 60.0
SPAWN_TIMEOUT_S = 30.0
_INSTANCE_PREFIX = "z"


MAX_ENV_BYTES = 64 * 1024
"""A session's environment travels in one frame over its socket before the protocol starts."""
MAX_MOUNTS_BYTES = 64 * 1024
"""The session's mounts (targets, hidden paths) travel in one frame over its socket, before its setup:
both sit in the socket's buffer until the session reads them."""


class ZygoteBackend(SandboxBackend):
    """Sessions forked from one preloaded, single-threaded fork server (the default backend)."""

    name: ClassVar[str] = "zygote"

    def __init__(
        self,
        *,
        runtime_dir: str | Path | None = None,
        uid_base: int | None = None,
        embryos: int = 2,
        js_embryos: int = 1,
        **_: Any,
    ) -> None:
        """``embryos``: forked, not yet specialized sessions the fork server keeps ready (0: on demand).
        ``js_embryos``: the same for JavaScript sessions, each with Node started (0: on demand; Node is
        then started when the session is, which takes longer than the rest of a session's start).
        ``uid_base``: as root, sessions run as host uids ``uid_base + 1 ...``; by default a block of its
        own is reserved for this engine (:mod:`thinkbox.sandbox.confine.uids`), so no two engines share
        a uid."""
        self.embryos = embryos
        self.js_embryos = js_embryos
        self.runtime_root = Path(runtime_dir) if runtime_dir is not None else default_runtime_root()
        self._uid_override = uid_base
        self._uid_block: uids.UidBlock | None = None
        self.uid_base = uid_base or 0
        self.instance = f"{_INSTANCE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.runtime = self.runtime_root / self.instance
        self._proc: asyncio.subprocess.Process | None = None
        self._ctl: socket.socket | None = None
        self._start_lock = asyncio.Lock()
        self._pending: dict[int, Pending] = {}
        self._live: dict[int, Live] = {}
        self._by_slot: dict[int, Live] = {}
        self._slots: dict[str, Slot] = {}
        self._releasing: dict[int, asyncio.Future[None]] = {}
        self._embryos = Embryos()
        self._zygote_pid: int | None = None
        self._dead_reason: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._log_path = self.runtime / "zygote.log"

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            isolation="fork server + namespaces (mnt pid net ipc uts cgroup), pivot_root, seccomp, rlimits",
            details={"runtime": str(self.runtime), "cgroups": cgroups.unavailable_reason() or "used"},
        )

    # -- zygote life cycle ------------------------------------------------------------------------
    def _check_platform(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(
                "the zygote backend needs Linux namespaces; use --backend bwrap or docker"
            )
        for ns in ("mnt", "pid", "net", "ipc", "uts", "cgroup"):
            if not os.path.exists(f"/proc/self/ns/{ns}"):
                raise SandboxUnavailable(
                    f"the kernel has no {ns} namespaces, which the zygote backend needs; use --backend bwrap"
                )
        if shutil.which("tini") is None:
            raise SandboxUnavailable(
                "the zygote backend runs tini as each session's init and it is not installed: "
                "`apt-get install tini` (scripts/setup.sh does), or use --backend bwrap"
            )

    async def start(self) -> None:
        if self._proc is not None and self._proc.returncode is None and self._dead_reason is None:
            return
        async with self._start_lock:
            if self._proc is not None and self._proc.returncode is None and self._dead_reason is None:
                return
            self._check_platform()
            await self._cleanup_previous()
            self._remove_stale()
            self._reserve_uids()
            await self._launch()

    def _reserve_uids(self) -> None:
        if os.geteuid() != 0 or self._uid_override is not None or self._uid_block is not None:
            return
        try:
            self._uid_block = uids.reserve(self.runtime_root / "uids")
        except OSError as exc:
            raise SandboxUnavailable(f"no uid block could be reserved for the sessions: {exc}") from None
        self.uid_base = self._uid_block.base

    def _remove_stale(self) -> None:
        """Workspaces and cgroups of thinkbox instances whose owner process is gone."""
        remove_stale_instances(self.runtime_root, _INSTANCE_PREFIX)

    async def _launch(self) -> None:
        self.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.runtime / "root").mkdir(exist_ok=True)
        (self.runtime / "template").mkdir(exist_ok=True)
        (self.runtime / "ws").mkdir(exist_ok=True, mode=0o711)
        cache = default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(cache),
            "PYTHONDONTWRITEBYTECODE": "1",
            # the fork server runs the very thinkbox the host imported (a checkout's; an install in
            # site-packages is found anyway, and must not go ahead of the standard library)
            **({} if _PACKAGE_ROOT.endswith("-packages") else {"PYTHONPATH": _PACKAGE_ROOT}),
        }
        config = {
            "runtime_dir": str(self.runtime),
            "instance": self.instance,
            "uid_base": self.uid_base,
            "embryos": self.embryos,
            "js_embryos": self.js_embryos,
        }
        log_file = open(self._log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child, local file
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "thinkbox.sandbox.zygote.server",
                str(child.fileno()),
                json.dumps(config),
                pass_fds=[child.fileno()],
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd="/",
                # its own session: a terminal's Ctrl-C is for the engine, which decides what to interrupt
                start_new_session=True,
            )
        finally:
            log_file.close()
            child.close()
        parent.setblocking(False)
        self._ctl = parent
        self._dead_reason = None
        ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ready = ready
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_control)
        self._watcher = asyncio.create_task(self._watch(self._proc))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                msg = await ready
        except TimeoutError:
            await self._stop_zygote()
            raise SandboxUnavailable(f"the zygote did not start within {START_TIMEOUT_S:.0f} s") from None
        if msg.get("op") != "ready":
            await self._stop_zygote()
            tail = log_tail(self._log_path)
            raise SandboxUnavailable(
                f"{msg.get('message')}{': ' + tail if tail else ''}; the zygote's log is {self._log_path}; "
                "where the zygote cannot run, use --backend bwrap"
            )
        self._zygote_pid = int(msg["pid"])

    def _on_control(self) -> None:
        ctl = self._ctl
        assert ctl is not None
        while True:
            try:
                data = ctl.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                log.debug("zygote control socket: %s", exc)
            if not data:
                self._on_zygote_gone()
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        slot = int(msg.get("slot") or 0)
        if op in ("ready", "fatal"):
            if not self._ready.done():
                self._ready.set_result(msg)
        elif op == "warm":
            self._embryos.warm.add(int(msg["pid"]))
        elif op == "embryo":
            self._embryos.add(int(msg["pid"]), int(msg["kernel"]), str(msg.get("kind", "py")))
        elif op == "spawned":
            self._embryos.forget(int(msg["pid"]))
            pending = self._pending.get(slot)
            if pending is not None and not pending.spawned.done():
                pending.cgroup = msg.get("cgroup")
                pending.kernel = int(msg["kernel"])
                pending.spawned.set_result(int(msg["pid"]))
        elif op == "error":
            live = self._by_slot.get(slot)
            if live is not None:
                live.error = str(msg.get("message"))
                return
            pending = self._pending.get(slot)
            if pending is None:
                return
            if not msg.get("no_process"):  # also after "spawned", until spawn() makes the Live
                pending.error = str(msg.get("message"))
            elif not pending.spawned.done():
                pending.spawned.set_exception(SessionStartError(f"zygote: {msg.get('message')}"))
        elif op == "status":
            live = self._by_slot.get(slot)
            if live is not None:
                live.returncode = int(msg["returncode"])
        elif op == "exit":
            self._embryos.forget(int(msg["pid"]))
            live = self._live.pop(int(msg["pid"]), None)
            if live is not None:
                self._finish(live, int(msg["returncode"]))
        elif op == "released":
            waiter = self._releasing.pop(slot, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _finish(self, live: Live, init_rc: int | None, reason: str = "") -> None:
        for fd in (live.pidfd, live.kernel_fd):
            if fd is not None:
                os.close(fd)
        live.pidfd = live.kernel_fd = None
        if self._by_slot.get(live.slot) is live:
            del self._by_slot[live.slot]
        rc = live.returncode if live.returncode is not None else init_rc
        if not live.exited.done():
            live.exited.set_result(ExitInfo(rc, live.error or reason))

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """The sessions' inits keep the control socket open, so the zygote's end is seen here."""
        await proc.wait()
        if proc is self._proc and self._ctl is not None:
            self._on_control()  # what the zygote said before it died
            if self._ctl is not None:
                self._on_zygote_gone()

    def _on_zygote_gone(self) -> None:
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            self._ctl.close()
            self._ctl = None
        rc = self._proc.returncode if self._proc is not None else None
        self._dead_reason = f"the zygote process ended (status {rc})"
        if not self._ready.done():
            self._ready.set_result({"op": "fatal", "message": self._dead_reason})
        for pending in self._pending.values():
            if not pending.spawned.done():
                pending.spawned.set_exception(SessionStartError(self._dead_reason))
        for live in list(self._live.values()):  # the sessions lost their reaper: kill them
            with contextlib.suppress(OSError):
                if live.pidfd is not None:
                    signal.pidfd_send_signal(live.pidfd, signal.SIGKILL)
            self._finish(live, None, "killed because the zygote died")
        self._live.clear()

    async def _stop_zygote(self) -> None:
        if self._ctl is not None:
            self._on_zygote_gone()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._proc = None

    async def _cleanup_previous(self) -> None:
        if self._proc is not None:
            await self._stop_zygote()

    # -- sessions ---------------------------------------------------------------------------------
    async def spawn(self, session_id: str, config: SessionConfig) -> KernelProcess:
        await self.start()
        if self._ctl is None:
            raise SessionStartError(self._dead_reason or "the zygote is not running")
        if config.limits.network:
            raise ConfigError("limits.network=True is not supported by the zygote backend; set it to false")
        check_language(config)
        setup = wire.encode({"type": "setup", "env": config.env, "cwd": config.cwd_in_workspace()})
        if len(setup) > MAX_ENV_BYTES:
            raise ConfigError(
                f"the session's environment is {len(setup)} bytes encoded; at most {MAX_ENV_BYTES} "
                "(SessionConfig.env)"
            )
        slot = self._slot(session_id, config)
        mounts = wire.encode({"type": "mounts", "mounts": slot.mounts})
        if len(mounts) > MAX_MOUNTS_BYTES:
            raise ConfigError(
                f"the session's mounts take {len(mounts)} bytes to describe; at most {MAX_MOUNTS_BYTES} "
                "(fewer or shorter Mount.hide paths in SessionConfig.mounts)"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Both are read by the session's own process, never by the zygote (whose heap every later
        # session inherits): the mounts before it drops its privileges, the setup once it is confined.
        ours.sendall(mounts + setup)
        request = {
            "op": "spawn",
            "slot": slot.number,
            "fresh": not slot.spawned,
            "limits": config.limits.model_dump(),
            "language": config.language,
            "sources": len(slot.fds),
            "owners": slot.owners,
        }
        encoded = json.dumps(request).encode()
        pending = Pending(asyncio.get_running_loop().create_future())
        self._pending[slot.number] = pending
        try:
            await self._send_request(encoded, [theirs.fileno(), *slot.fds])
            theirs.close()
            async with asyncio.timeout(SPAWN_TIMEOUT_S):
                pid = await pending.spawned
        except TimeoutError:
            ours.close()
            raise SessionStartError(
                f"the zygote did not start session {session_id} in {SPAWN_TIMEOUT_S:.0f} s"
            ) from None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            del self._pending[slot.number]
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        try:
            kernel_fd: int | None = os.pidfd_open(pending.kernel)
        except OSError:
            kernel_fd = None
        exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()
        live = Live(session_id, slot.number, pid, pidfd, exited, error=pending.error, cgroup=pending.cgroup)
        live.kernel, live.kernel_fd = pending.kernel, kernel_fd
        slot.spawned = True
        self._live[pid] = live
        self._by_slot[slot.number] = live
        return ZygoteKernel(self, ours, live)

    def _slot(self, session_id: str, config: SessionConfig) -> Slot:
        """The session's slot: made at its first spawn (the lowest free number, its mount sources checked
        and opened), the same one at every restart."""
        known = self._slots.get(session_id)
        if known is not None and known.spec == config.mounts:
            return known
        if known is not None:  # the caller asks for other mounts: a new request, checked anew
            self._forget_slot(session_id)
            self._slots[session_id] = Slot(known.number, (), [], [], [], spawned=known.spawned)
        taken = {s.number for s in self._slots.values()} | set(self._releasing)
        number = known.number if known is not None else next(n for n in itertools.count(1) if n not in taken)
        if number >= uids.BLOCK_SIZE:
            raise SessionStartError(f"{uids.BLOCK_SIZE - 1} sessions are open in this engine; close some")
        mounts, fds, owners = open_mounts(config.mounts, os.geteuid() == 0)
        spawned = known is not None and known.spawned
        slot = self._slots[session_id] = Slot(number, config.mounts, mounts, fds, owners, spawned=spawned)
        return slot

    def _forget_slot(self, session_id: str) -> Slot | None:
        slot = self._slots.pop(session_id, None)
        if slot is not None:
            for fd in slot.fds:
                os.close(fd)
        return slot

    async def _send_request(self, data: bytes, fds: list[int]) -> None:
        for _ in range(10_000):
            ctl = self._ctl
            if ctl is None:
                raise SessionStartError(self._dead_reason or "the zygote is not running")
            try:
                if not fds:
                    ctl.send(data)
                else:
                    socket.send_fds(ctl, [data], fds)
                return
            except BlockingIOError:
                await asyncio.sleep(0.001)
            except OSError as exc:
                raise SessionStartError(f"the zygote's control socket failed: {exc}") from None
        raise SessionStartError("the zygote is not accepting requests (control socket full)")

    async def release(self, session_id: str) -> None:
        slot = self._forget_slot(session_id)
        if slot is None:
            return
        # the number is not reused before its workspace is gone (no await before this line)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releasing[slot.number] = waiter
        confirmed = self._ctl is None  # without a zygote its mount namespace, workspaces included, is gone
        try:
            live = self._by_slot.get(slot.number)
            if live is not None:  # still running: the session should have killed it first
                with contextlib.suppress(OSError):
                    if live.pidfd is not None:
                        signal.pidfd_send_signal(live.pidfd, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KILL_TIMEOUT_S):
                        await asyncio.shield(live.exited)
            if self._ctl is not None:  # the workspace is mounted in the zygote's mount namespace
                await self._send_request(json.dumps({"op": "release", "slot": slot.number}).encode(), [])
                async with asyncio.timeout(KILL_TIMEOUT_S):
                    await waiter
                confirmed = True
        except (TimeoutError, SessionStartError):
            log.warning("session %s: the zygote did not confirm the workspace release", session_id)
        finally:
            if confirmed:
                self._releasing.pop(slot.number, None)
            # unconfirmed: the number stays taken, so no later session can be handed that workspace

    async def aclose(self) -> None:
        for live in list(self._live.values()):
            with contextlib.suppress(OSError):
                if live.pidfd is not None:
                    signal.pidfd_send_signal(live.pidfd, signal.SIGKILL)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        for live in list(self._live.values()):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    await asyncio.shield(live.exited)
        await self._stop_zygote()
        prefix = self.instance + "-"
        await asyncio.to_thread(cgroups.remove_stale, lambda name: name.startswith(prefix))
        await asyncio.to_thread(remove_runtime, self.runtime)
        for session_id in list(self._slots):
            self._forget_slot(session_id)
        if self._uid_block is not None:
            self._uid_block.release()
            self._uid_block = None

    def ready_embryos(self, kind: str = "py") -> int:
        """Prepared sessions of ``kind`` (py: Python and shell; js: JavaScript, Node up) ready now."""
        return self._embryos.ready(kind)

    def idle_pids(self) -> set[int]:
        """Host pids of the prepared, not yet used sessions (an init, its sleep and an interpreter each;
        Node too for JavaScript). They come and go as the fork server refills its pool: a leak check
        should leave them out."""
        return self._embryos.pids()

    def workspace_dir(self, session_id: str) -> Path | None:
        """Where an open session's workspace is mounted, in the zygote's mount namespace (seen from the
        host through ``/proc/<zygote_pid>/root``); None for an unknown session."""
        slot = self._slots.get(session_id)
        return None if slot is None else self.runtime / "ws" / str(slot.number)

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote_pid if self._proc is not None and self._proc.returncode is None else None


__all__ = ["ZygoteBackend", "ZygoteKernel"]
