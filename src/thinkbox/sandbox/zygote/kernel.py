"""What the zygote backend keeps per session: the slot (all the fork server knows of a session), the
live process handles, and :class:`ZygoteKernel`, the :class:`~thinkbox.sandbox.backend.KernelProcess`
it hands to the session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thinkbox.sandbox import procs
from thinkbox.sandbox.backend import ExitInfo, KernelProcess
from thinkbox.sandbox.types import Mount

if TYPE_CHECKING:
    from thinkbox.sandbox.zygote.backend import ZygoteBackend

log = logging.getLogger(__name__)

KILL_TIMEOUT_S = 5.0
_INIT_CHILD = (b"sleep", b"infinity")
"""The init's own child (tini runs ``sleep infinity``): not a process of the session."""


class Embryos:
    """The fork server's prepared, unused sessions as it reports them: init pid -> interpreter pid, their
    kind (py: Python and shell sessions; js: with Node pre-started) and which js ones have Node up."""

    def __init__(self) -> None:
        self.kernels: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self.warm: set[int] = set()

    def add(self, pid: int, kernel: int, kind: str) -> None:
        self.kernels[pid], self.kinds[pid] = kernel, kind

    def forget(self, pid: int) -> None:
        self.kernels.pop(pid, None)
        self.kinds.pop(pid, None)
        self.warm.discard(pid)

    def ready(self, kind: str) -> int:
        alive = (p for p in self.kernels if self.kinds.get(p) == kind and os.path.exists(f"/proc/{p}"))
        return sum(1 for p in alive if kind != "js" or p in self.warm)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for pid, kernel in list(self.kernels.items()):
            for p in (pid, kernel):
                if os.path.exists(f"/proc/{p}"):
                    found.add(p)
                    found.update(procs.children(p))
        return found


@dataclass
class Pending:
    spawned: asyncio.Future[int]
    error: str = ""
    cgroup: str | None = None
    kernel: int = 0


@dataclass
class Slot:
    """What the backend keeps per session between spawns: its slot number (uid offset and workspace
    name, all the zygote knows of it) and its mount sources, opened once so a restart cannot be
    redirected by a symlink swapped in meanwhile."""

    number: int
    spec: tuple[Mount, ...]
    mounts: list[dict[str, Any]]
    fds: list[int]
    """One per distinct source; each of ``mounts`` names its own by index."""
    owners: list[list[int]]
    """Distinct (uid, gid) of idmapped mounts; each of ``mounts`` with an owner names its own by index."""
    spawned: bool = False
    """Once a session ran in this slot, a spawn is a restart and keeps the workspace."""


@dataclass
class Live:
    sid: str
    slot: int
    pid: int
    pidfd: int | None
    exited: asyncio.Future[ExitInfo]
    returncode: int | None = None
    error: str = ""
    cgroup: str | None = None
    kernel: int = 0
    """Host pid of the interpreter (``pid`` is its init, pid 1 of the namespace)."""
    kernel_fd: int | None = None


class ZygoteKernel(KernelProcess):
    def __init__(self, backend: ZygoteBackend, sock: socket.socket, live: Live) -> None:
        self.sock = sock
        self._backend = backend
        self._live = live

    @property
    def pid(self) -> int:
        """Host pid of the session's init (pid 1 inside its namespace)."""
        return self._live.pid

    def _signal(self, signum: int) -> None:
        live = self._live
        if live.exited.done():
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if live.pidfd is not None:
                signal.pidfd_send_signal(live.pidfd, signum)
            else:
                os.kill(live.pid, signum)

    @property
    def cgroup_name(self) -> str | None:
        """Name of the session's cgroup under the ``thinkbox`` parent (None without cgroups)."""
        return self._live.cgroup

    def interrupt(self) -> None:
        """SIGINT to the interpreter itself (its init is tini, which would pass it to its ``sleep``)."""
        live = self._live
        if live.exited.done() or live.returncode is not None or not live.kernel:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if live.kernel_fd is not None:
                signal.pidfd_send_signal(live.kernel_fd, signal.SIGINT)
            else:
                os.kill(live.kernel, signal.SIGINT)

    async def kill(self) -> None:
        self._signal(signal.SIGKILL)
        try:
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(self._live.exited)
        except TimeoutError:
            log.warning(
                "session %s: init %d did not end within %.0f s of SIGKILL",
                self._live.sid,
                self._live.pid,
                KILL_TIMEOUT_S,
            )

    async def wait(self) -> ExitInfo:
        live = self._live
        if live.error and not live.exited.done():  # a failed setup step: the process is ending anyway
            try:
                async with asyncio.timeout(0.2):
                    return await asyncio.shield(live.exited)
            except TimeoutError:
                return ExitInfo(None, live.error)
        return await asyncio.shield(live.exited)

    def host_pids(self) -> list[int]:
        """The interpreter, its children and the orphans its init adopted (not the init and its sleep)."""
        live = self._live
        if not live.kernel or not os.path.exists(f"/proc/{live.kernel}"):
            return []
        pids = [live.kernel, *procs.children(live.kernel)]
        pids += [p for p in procs.children(live.pid) if procs.cmdline(p) != _INIT_CHILD]
        return pids
