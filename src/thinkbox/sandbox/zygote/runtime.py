"""Where the zygote backend keeps its runtime files, and the checks and clean-up around them."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from thinkbox.errors import ConfigError
from thinkbox.sandbox.confine import isolation, uids
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


def check_mount(mount: Mount) -> dict[str, Any]:
    """The mount as the fork server gets it: the source checked (it travels as an fd), the target relative
    to the workspace."""
    if not Path(mount.source).is_dir():
        raise ConfigError(f"mount source {mount.source} is not an existing directory (SessionConfig.mounts)")
    target = mount.target_in_workspace()[len(WORKSPACE) + 1 :]
    return {"source": str(Path(mount.source).resolve()), "target": target, "read_only": mount.read_only}


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
