"""Where the zygote backend keeps its runtime files, and the checks and clean-up around them."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from thinkbox.errors import ConfigError
from thinkbox.sandbox.confine import cgroups, isolation, uids
from thinkbox.sandbox.types import WORKSPACE, Mount


def default_runtime_root() -> Path:
    """/run/thinkbox as root; else $XDG_RUNTIME_DIR/thinkbox, or /tmp/thinkbox-UID checked to be our own
    private directory (a predictable name in /tmp could have been made by another user first)."""
    if os.geteuid() == 0:
        return Path("/run/thinkbox")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "thinkbox"
    return uids.private_dir(Path(f"/tmp/thinkbox-{os.getuid()}")) / "thinkbox"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "thinkbox" / "matplotlib"


def check_mount(mount: Mount, privileged: bool) -> dict[str, Any]:
    """The mount as the fork server gets it: the source checked (it travels as an fd), the target and the
    hidden paths relative to the workspace, and the owner where an idmapped mount is needed (as root;
    an unprivileged engine's sessions act as its own user already, so only that owner is accepted)."""
    source = Path(mount.source)
    if not source.is_dir():
        raise ConfigError(f"mount source {mount.source} is not an existing directory (SessionConfig.mounts)")
    owner = mount.owner
    if owner is not None and not privileged:
        if owner != (os.geteuid(), os.getegid()):
            raise ConfigError(
                f"Mount.owner {owner}: sessions of an unprivileged zygote act as the engine's user "
                f"({os.geteuid()}, {os.getegid()}) and cannot stand for another; run the engine as root"
            )
        owner = None
    skip = len(WORKSPACE) + 1
    return {
        # an owner's mount grants ownership of what it shows: its path is taken as given, never resolved
        "source": os.path.abspath(source) if mount.owner is not None else str(source.resolve()),
        "nofollow": mount.owner is not None,
        "target": mount.target_in_workspace()[skip:],
        "read_only": mount.read_only,
        "hide": [path[skip:] for path in mount.hidden_in_workspace()],
        "owner": owner,
    }


def open_mounts(
    mounts: tuple[Mount, ...], privileged: bool
) -> tuple[list[dict[str, Any]], list[int], list[list[int]]]:
    """The mounts of a spawn request, the fds of their sources (one per distinct source: many covers may
    share one) and their distinct owners; each mount names its source and owner by index."""
    out: list[dict[str, Any]] = []
    fds: list[int] = []
    owners: list[list[int]] = []
    opened: dict[tuple[str, bool], int] = {}
    try:
        for m in mounts:
            checked = check_mount(m, privileged)
            key = (checked.pop("source"), checked.pop("nofollow"))
            if key not in opened:
                opened[key] = len(fds)
                fds.append(_open_source(*key))
            checked["source"] = opened[key]
            owner = checked.pop("owner")
            if owner is not None:
                if list(owner) not in owners:
                    owners.append(list(owner))
                checked["owner"] = owners.index(list(owner))
            out.append(checked)
    except BaseException as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, OSError):
            raise ConfigError(f"mount source cannot be opened: {exc} (SessionConfig.mounts)") from None
        raise
    return out, fds, owners


def _open_source(path: str, nofollow: bool) -> int:
    """An ``O_PATH`` fd of a mount source, opened once per session (without any symlink: ``nofollow``)."""
    if nofollow:
        return isolation.open_nofollow(path)
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def log_tail(path: Path, limit: int = 600) -> str:
    """The last line(s) of a log, for an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip().splitlines()[-1]
    except (OSError, IndexError):
        return ""


def remove_runtime(inst: Path) -> None:
    """Unmount the workspaces of a runtime dir and remove it."""
    ws_root = inst / "ws"
    if ws_root.is_dir():
        for ws in ws_root.iterdir():
            with contextlib.suppress(OSError):
                isolation.umount2(str(ws), isolation.MNT_DETACH)
    with contextlib.suppress(OSError):
        isolation.umount2(str(inst / "root"), isolation.MNT_DETACH)
    shutil.rmtree(inst, ignore_errors=True)


def remove_stale_instances(runtime_root: Path, prefix: str) -> None:
    """Workspaces and cgroups of thinkbox instances (``<prefix><pid>-...``) whose owner process is gone."""

    def owner_gone(name: str) -> bool:
        if not name.startswith(prefix):
            return False
        pid_text = name[len(prefix) :].split("-", 1)[0]
        return pid_text.isdigit() and not os.path.exists(f"/proc/{pid_text}")

    with contextlib.suppress(OSError):
        cgroups.remove_stale(owner_gone)
    if not runtime_root.is_dir():
        return
    for inst in runtime_root.iterdir():
        if inst.is_dir() and owner_gone(inst.name):
            remove_runtime(inst)
