"""What the bwrap backend gives a session from the host: the caller's mounts (sources pinned at a
session's first spawn), their covers (``Mount.hide``) and the session's host gid (``Mount.owner``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from thinkbox.errors import ConfigError, SessionStartError
from thinkbox.sandbox.confine import isolation
from thinkbox.sandbox.types import Mount


class Sources:
    """A session's mount sources, opened once (``O_PATH``) at its first spawn and bound by fd at every
    restart: a symlink swapped into a writable mount meanwhile cannot redirect a restart's mount.

    ``Mount.owner``: a bwrap session acts as the engine's uid on the host (its user namespace maps the
    session's uid to it), so an owner's uid must be that one; its gid becomes the session's host gid (one
    for all mounts), so files the session creates get it and folders open to that group are its own.
    """

    def __init__(self, mounts: tuple[Mount, ...], empty: Path) -> None:
        self.spec = mounts
        self.fds: list[int] = []
        self.args: list[str] = []
        self.gid: int | None = None
        self.hidden: list[tuple[Path, str]] = []
        """(host path, target) of each covered path, checked again at every spawn."""
        self.empty = empty
        try:
            for mount in mounts:
                self._add(mount, empty)
        except BaseException:
            self.close()
            raise

    def _add(self, mount: Mount, empty: Path) -> None:
        target = mount.target_in_workspace()
        if mount.owner is not None:
            uid, gid = mount.owner
            if uid != os.geteuid() or (gid != os.getegid() and os.geteuid() != 0):
                raise ConfigError(
                    f"Mount.owner {mount.owner}: bwrap sessions act as the engine's uid {os.geteuid()}"
                    + ("" if os.geteuid() == 0 else f" and gid {os.getegid()}")
                    + "; use the zygote backend as root for another owner"
                )
            if gid != os.getegid():
                if self.gid not in (None, gid):
                    raise ConfigError(f"Mount.owner: two gids ({self.gid}, {gid}) in one bwrap session")
                self.gid = gid
        source = Path(mount.source).resolve() if mount.owner is None else Path(os.path.abspath(mount.source))
        try:
            if mount.owner is None:
                fd = os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            else:  # it grants ownership of what it shows: no symlink anywhere in its path
                fd = isolation.open_nofollow(str(source))
        except OSError:
            raise ConfigError(
                f"mount source {str(mount.source)!r} is not a host directory (SessionConfig.mounts)"
            ) from None
        self.fds.append(fd)
        self.args += ["--ro-bind-fd" if mount.read_only else "--bind-fd", str(fd), target]
        for rel, path in zip(mount.hide, mount.hidden_in_workspace(), strict=True):
            self.hidden.append((source / rel.lstrip("/"), path))

    def cover_args(self) -> list[str]:
        """bwrap arguments covering the hidden paths that exist now (bwrap would create a missing one on
        the host, and would follow a symlink: refused)."""
        args: list[str] = []
        for host, target in self.hidden:
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise SessionStartError(f"hidden path {target} is not a directory; not started")
            args += ["--ro-bind", str(self.empty), target]
        return args

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
