"""What the docker backend gives a container from the host: bind mounts (pinned at a session's first
spawn) and ulimits."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from thinkbox.errors import ConfigError, SessionStartError
from thinkbox.sandbox.confine import isolation
from thinkbox.sandbox.types import Limits, MiB, Mount

log = logging.getLogger(__name__)


def bind_mounts(mounts: tuple[Mount, ...], known: dict[str, tuple[str, int, int]] | None = None) -> list[Any]:
    """Docker bind mounts for the caller's mounts; a target outside /workspace or a missing source is
    refused. ``known`` (source -> canonical path, device and inode, filled at a session's first spawn)
    pins each source: dockerd resolves the path again at every start, so a restart checks, without following
    symlinks, that it still names the same directory. Read-only sources are bound without their
    submounts: engines before Docker 25 make only the top of a recursive bind read-only."""
    from docker.types import Mount as DockerMount

    out = []
    for mount in mounts:
        if mount.owner is not None:
            raise ConfigError(
                "Mount.owner: docker sessions run as the image's user and cannot stand for a host owner; "
                "use the zygote or bwrap backend (THINKBOX_SANDBOX__BACKEND / --backend)"
            )
        source = Path(mount.source).resolve()
        if not source.is_dir():
            raise ConfigError(
                f"mount source {str(mount.source)!r} is not a host directory (SessionConfig.mounts)"
            )
        target = mount.target_in_workspace()
        if known is not None:
            source = pinned(Path(mount.source), known)
        docker_mount = DockerMount(target, str(source), type="bind", read_only=mount.read_only)
        if mount.read_only:
            docker_mount["BindOptions"] = {"NonRecursive": True}
        out.append(docker_mount)
        out += _covers(mount, source)
    return out


def _covers(mount: Mount, source: Path) -> list[Any]:
    """An empty read-only tmpfs over each hidden path that exists now (dockerd would create a missing
    one on the host, and follow a symlink: refused). Docker mounts parents before children."""
    from docker.types import Mount as DockerMount

    out = []
    for rel, target in zip(mount.hide, mount.hidden_in_workspace(), strict=True):
        try:
            st = os.lstat(source / rel.lstrip("/"))
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise SessionStartError(f"hidden path {target} is not a directory; not started")
        out.append(DockerMount(target, None, type="tmpfs", read_only=True, tmpfs_size=4096))
    return out


def pinned(configured: Path, known: dict[str, tuple[str, int, int]]) -> Path:
    """The canonical path of a mount source, checked to be the directory first seen for this session."""
    key = str(configured)
    path = known[key][0] if key in known else str(configured.resolve())
    try:
        fd = isolation.open_nofollow(path)
    except OSError as exc:
        raise SessionStartError(f"mount source {path!r} cannot be opened without symlinks: {exc}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if known.setdefault(key, (path, st.st_dev, st.st_ino)) != (path, st.st_dev, st.st_ino):
        raise SessionStartError(f"mount source {path!r} was replaced since the session started; not mounted")
    return Path(path)


def ulimits(limits: Limits) -> list[Any]:
    from docker.types import Ulimit

    table = {
        "cpu": limits.cpu_time_s,
        "nofile": limits.open_files,
        "fsize": limits.file_size_mib * MiB,
        "core": 0,
    }
    return [Ulimit(name=name, soft=value, hard=value) for name, value in table.items()]


# -- one session -----------------------------------------------------------------------------------
