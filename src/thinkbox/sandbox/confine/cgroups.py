"""Per-session control groups: a memory backstop, a process cap and a CPU quota.

Both layouts are supported:

- **v1** (separate hierarchies, e.g. ``/sys/fs/cgroup/{memory,pids,cpu}``): one directory per controller;
- **v2** (unified, most hosts): a delegated, writable subtree where ``memory`` and ``pids`` can be
  enabled for children (the root cgroup when running as root in a container, or a systemd delegate).

Every thinkbox cgroup lives under a ``thinkbox`` parent, so stale ones (from a crashed run) can be found
and removed with :func:`remove_stale`. Where cgroups cannot be used (not root, no delegation),
:meth:`Cgroup.create` returns None and :func:`unavailable_reason` says why; rlimits still apply.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thinkbox.sandbox.types import Limits, MiB

log = logging.getLogger(__name__)

PARENT = "thinkbox"
MEMORY_BACKSTOP_MIB = 256
"""The cgroup memory limit sits this far above RLIMIT_AS, so a MemoryError comes first."""
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class Layout:
    """Where thinkbox's cgroups go: ``version`` 1 (one parent per controller) or 2 (one parent)."""

    version: int
    parents: dict[str, Path]
    """controller -> the ``thinkbox`` parent directory (v2: one entry, key ``unified``)."""


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if rfields and rfields[0] in ("cgroup", "cgroup2"):
                out.append((fields[4], rfields[0], rfields[2] if len(rfields) > 2 else ""))
    return out


def _own_v2_path() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _detect() -> tuple[Layout | None, str]:
    if not os.path.isdir("/sys/fs/cgroup"):
        return None, "no /sys/fs/cgroup (not Linux, or cgroupfs not mounted)"
    v1: dict[str, Path] = {}
    v2_mount: str | None = None
    for point, fstype, opts in _mounts():
        if fstype == "cgroup":
            for ctl in V1_CONTROLLERS:
                if ctl in opts.split(","):
                    v1[ctl] = Path(point)
        elif v2_mount is None or point == "/sys/fs/cgroup":
            v2_mount = point
    if "memory" in v1 and "pids" in v1:
        parents = {}
        try:
            for ctl, mount in v1.items():
                parent = mount / PARENT
                parent.mkdir(exist_ok=True)
                parents[ctl] = parent
        except OSError as exc:
            return None, f"cgroup v1 is not writable ({exc}); run the engine as root for cgroup limits"
        return Layout(1, parents), ""
    if v2_mount is None:
        return None, "neither the v1 memory+pids controllers nor a cgroup2 mount were found"
    mount = Path(v2_mount)
    reasons = []
    for base in dict.fromkeys([mount / _own_v2_path().lstrip("/"), mount]):
        try:
            available = (base / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(available):
                reasons.append(f"{base}: memory/pids controllers not available")
                continue
            enabled = (base / "cgroup.subtree_control").read_text().split()
            want = [c for c in ("memory", "pids", "cpu") if c in available]
            if not set(want) <= set(enabled):
                _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in want))
            parent = base / PARENT
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in want))
            return Layout(2, {"unified": parent}), ""
        except OSError as exc:
            reasons.append(f"{base}: {exc.strerror or exc}")
    return None, "no writable, delegated cgroup v2 subtree (" + "; ".join(reasons) + ")"


@functools.cache
def _layout() -> tuple[Layout | None, str]:
    return _detect()


def layout() -> Layout | None:
    return _layout()[0]


def unavailable_reason() -> str:
    """Why cgroup limits are not used ('' when they are)."""
    return _layout()[1]


class Cgroup:
    """One session's cgroup (a directory per controller on v1, one directory on v2)."""

    def __init__(self, name: str, dirs: list[Path], version: int) -> None:
        self.name = name
        self.dirs = dirs
        self.version = version

    @classmethod
    def named(cls, name: str) -> Cgroup | None:
        """The (maybe not yet created) cgroup ``thinkbox/<name>``; None where cgroups are unusable."""
        lay = layout()
        if lay is None:
            return None
        return cls(name, [parent / name for parent in lay.parents.values()], lay.version)

    def make(self, limits: Limits) -> None:
        """Create the directories (if needed) and write ``limits``."""
        for d in self.dirs:
            d.mkdir(exist_ok=True)
        try:
            self.set_limits(limits)
        except OSError:
            self.destroy()
            raise

    @classmethod
    def create(cls, name: str, limits: Limits) -> Cgroup | None:
        """Create ``thinkbox/<name>`` with ``limits``; None (reason in the log) where cgroups are unusable."""
        lay = layout()
        if lay is None:
            log.debug("cgroup limits not used: %s", unavailable_reason())
            return None
        cg = cls(name, [parent / name for parent in lay.parents.values()], lay.version)
        cg.make(limits)
        return cg

    def set_limits(self, limits: Limits) -> None:
        """Write ``limits`` (memory backstop, pids.max, CPU quota) into the cgroup."""
        memory = (limits.memory_mib + MEMORY_BACKSTOP_MIB) * MiB
        quota = max(1000, int(limits.cpu_cores * CPU_PERIOD_US))
        if self.version == 2:
            d = self.dirs[0]
            _write(d / "memory.max", str(memory))
            with contextlib.suppress(FileNotFoundError):
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(limits.processes))
            with contextlib.suppress(FileNotFoundError):
                _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        by_ctl = {d.parent.parent.name: d for d in self.dirs}
        _set_v1_memory(by_ctl["memory"], memory)
        _write(by_ctl["pids"] / "pids.max", str(limits.processes))
        if "cpu" in by_ctl:
            _write(by_ctl["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(by_ctl["cpu"] / "cpu.cfs_quota_us", str(quota))

    def add(self, pid: int) -> None:
        """Move ``pid`` (0: the caller) into the cgroup; its future children follow."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill_all(self, timeout: float = 2.0) -> None:
        """SIGKILL every process in the cgroup and wait (up to ``timeout``) until it is empty."""
        kill_file = self.dirs[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def destroy(self) -> None:
        """Remove the cgroup's directories (its processes must be gone: call :meth:`kill_all` first)."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.01)


def _set_v1_memory(d: Path, limit: int) -> None:
    """memory.limit_in_bytes, and memory.memsw.limit_in_bytes (memory + swap) to the same value where the
    kernel accounts swap: without it a session could push its memory into swap past the limit. The
    kernel keeps memsw >= memory at every step, so the order of the two writes depends on the direction."""
    memsw = d / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        _write(d / "memory.limit_in_bytes", str(limit))
        return
    try:
        _write(d / "memory.limit_in_bytes", str(limit))
        _write(memsw, str(limit))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _write(memsw, str(limit))  # raising: memsw first
        _write(d / "memory.limit_in_bytes", str(limit))


def existing(name: str) -> Cgroup | None:
    """The cgroup ``thinkbox/<name>`` if it exists (to clean up after a crash)."""
    lay = layout()
    if lay is None:
        return None
    dirs = [parent / name for parent in lay.parents.values()]
    return Cgroup(name, dirs, lay.version) if any(d.is_dir() for d in dirs) else None


def remove_stale(is_stale: Callable[[str], bool]) -> list[str]:
    """Kill and remove every ``thinkbox/<name>`` cgroup for which ``is_stale(name)``; return the names."""
    lay = layout()
    if lay is None:
        return []
    parents = [p for p in lay.parents.values() if p.is_dir()]
    names = {d.name for parent in parents for d in parent.iterdir() if d.is_dir()}
    removed = []
    for name in sorted(names):
        if not is_stale(name):
            continue
        cg = existing(name)
        if cg is None:
            continue
        cg.kill_all()
        with contextlib.suppress(OSError):
            cg.destroy()
            removed.append(name)
    return removed
