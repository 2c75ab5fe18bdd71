"""Host processes of sessions and how they ended: written once for every backend."""

from __future__ import annotations

import signal


def children(pid: int) -> list[int]:
    """Host pids of the direct children of ``pid`` (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def cmdline(pid: int) -> tuple[bytes, ...]:
    """Program name (without its directory) and arguments of ``pid``; empty when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return ()
    return (args[0].rpartition(b"/")[2], *args[1:])


def from_init_status(code: int | None) -> int | None:
    """An init (bwrap's, docker-init) exits with 128+N when its child died of signal N: make that -N, as
    ``os.waitstatus_to_exitcode`` reports a death by signal."""
    if code is not None and 128 < code < 128 + 65:
        return -(code - 128)
    return code


def describe_exit(returncode: int | None) -> str:
    """How an interpreter ended, in words for the user (``returncode`` negative: the signal)."""
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {"SIGKILL": " (killed: out of memory, a limit, or a kill)", "SIGSEGV": " (crashed)"}.get(
            name, ""
        )
        return f"it ended by {name}{hint}"
    return f"it exited with status {returncode}"
