"""Processes seen through /proc: what a test checks is left behind (no psutil needed)."""

from __future__ import annotations

import time
from pathlib import Path


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pids_with_arg(text: str) -> list[int]:
    """Processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def still_alive(pids: list[int], within_s: float) -> list[int]:
    """Those of ``pids`` still alive after waiting up to ``within_s`` for them to go."""
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def scan_memory(pid: int, needles: list[bytes]) -> tuple[set[bytes], int]:
    """Which ``needles`` occur in the readable memory of ``pid``, read from this (root) process through
    /proc/PID/mem, and how many bytes were read. A failure to open the memory raises: not being able to
    look is no answer (callers also check that enough was read)."""
    found: set[bytes] = set()
    scanned = 0
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if "r" not in perms or hi - lo > 1 << 30 or line.endswith("[vvar]"):
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue  # a guard page
            scanned += len(data)
            found.update(n for n in needles if n in data)
    return found, scanned
