"""Where the zygote backend keeps its runtime files, and the checks and clean-up around them."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

from thinkbox.errors import ConfigError
from thinkbox.sandbox.confine import isolation, uids
from thinkbox.sandbox.types import WORKSPACE


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


def check_mount(source: Path, target: str, read_only: bool) -> dict[str, Any]:
    src = Path(source)
    if not src.is_dir():
        raise ConfigError(f"mount source {src} is not an existing directory (SessionConfig.mounts)")
    rel = target[len(WORKSPACE) :] if target == WORKSPACE or target.startswith(WORKSPACE + "/") else target
    if target.startswith("/") and rel == target:
        raise ConfigError(
            f"mount target {target!r} must be relative or under {WORKSPACE} (SessionConfig.mounts)"
        )
    norm = posixpath.normpath(rel.lstrip("/") or ".")
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        raise ConfigError(f"mount target {target!r} escapes or replaces {WORKSPACE} (SessionConfig.mounts)")
    return {"source": str(src.resolve()), "target": norm, "read_only": read_only}


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
