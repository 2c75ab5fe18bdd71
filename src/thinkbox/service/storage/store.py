"""The files API's operations on the storage: write (streamed, limited, atomic), read, stat, list and
delete, each resolved without following any symlink (:mod:`.paths`); the folders and the session view are
in :mod:`.layout`, the quotas in :mod:`.quota`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.storage.errors import (
    BadPath,
    DirectoryNotEmpty,
    IsADirectory,
    NotFound,
    QuotaExceeded,
    TooLarge,
)
from thinkbox.service.storage.layout import Layout
from thinkbox.service.storage.paths import check_path, closing, missing_parents, open_parent, walk
from thinkbox.service.storage.quota import MiB, Quotas, Usage

if TYPE_CHECKING:
    from thinkbox.config import Settings

Scope = Literal["user", "tenant"]
AFTER_CODE_MAX_AGE_S = 1.0
"""How stale the usage a cell's quota check reads may be (one walk per second per tenant at most)."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    modified: float
    is_dir: bool


class Storage:
    """Folders of tenants and users under ``root``; every method is synchronous (call it in a thread)."""

    def __init__(
        self,
        root: Path,
        *,
        user_quota_bytes: int,
        user_quota_files: int,
        tenant_quota_bytes: int,
        tenant_quota_files: int,
        max_upload_bytes: int,
    ) -> None:
        self.layout = Layout(root)
        self.root = self.layout.root
        self.quotas = Quotas(
            self.layout,
            user_quota_bytes=user_quota_bytes,
            user_quota_files=user_quota_files,
            tenant_quota_bytes=tenant_quota_bytes,
            tenant_quota_files=tenant_quota_files,
        )
        self.user_quota_bytes, self.user_quota_files = user_quota_bytes, user_quota_files
        self.tenant_quota_bytes, self.tenant_quota_files = tenant_quota_bytes, tenant_quota_files
        self.max_upload_bytes = max_upload_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        s = settings.service
        return cls(
            settings.data_dir / "storage",
            user_quota_bytes=s.user_quota_mib * MiB,
            user_quota_files=s.user_quota_files,
            tenant_quota_bytes=s.tenant_quota_mib * MiB,
            tenant_quota_files=s.tenant_quota_files,
            max_upload_bytes=s.max_upload_mib * MiB,
        )

    # -- folders ----------------------------------------------------------------------------------
    def ensure(self, tenant: str, user: str) -> Path:
        """Make the tenant's and the user's folders (idempotent); the user's folder."""
        return self.layout.ensure(tenant, user)

    def users(self, tenant: str) -> builtins.list[str]:
        return self.layout.users(tenant)

    def session_config(self, tenant: str, user: str, base: SessionConfig) -> SessionConfig:
        """``base`` plus the user's view: see :mod:`thinkbox.service.storage.layout`."""
        return self.layout.session_config(tenant, user, base)

    # -- files ------------------------------------------------------------------------------------
    def write(
        self, tenant: str, user: str, scope: Scope, path: str, data: bytes | Iterable[bytes]
    ) -> FileEntry:
        """Write ``data`` (bytes or chunks) to ``path``, making parent folders; an existing file is
        replaced. The upload limit is enforced while streaming and the quotas before the file lands:
        a refusal leaves nothing behind."""
        rel = self._check(tenant, scope, path)
        parts = rel.split("/")
        with self._scope(tenant, user, scope) as base:  # a bad path is refused before any byte is read
            if not missing_parents(base, parts):
                self._existing(base, parts)
        lock = self.quotas.tenant_lock(tenant)
        with self._scope(tenant, user, scope) as base, self._staged(data) as (staging, name, size), lock:
            made = missing_parents(base, parts)
            old = None if made else self._existing(base, parts)
            self.quotas.check_room(tenant, user, scope, size - (old or 0), made + (old is None))
            with closing(open_parent(base, parts, create=True)) as parent:
                try:
                    os.rename(name, parts[-1], src_dir_fd=staging, dst_dir_fd=parent)
                except IsADirectoryError:
                    raise IsADirectory(f"{rel!r} is a folder") from None
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            self.quotas.adjust(tenant, user, scope, size - (old or 0), made + (old is None))
        return FileEntry(rel, st.st_size, st.st_mtime, False)

    def read(self, tenant: str, user: str, scope: Scope, path: str) -> BinaryIO:
        """The file, open for reading (the caller closes it)."""
        rel = self._check(tenant, scope, path)
        parts = rel.split("/")
        with self._scope(tenant, user, scope) as base, closing(open_parent(base, parts)) as parent:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no wait on a FIFO
            try:
                fd = os.open(parts[-1], flags, dir_fd=parent)
            except FileNotFoundError:
                raise NotFound(f"{rel!r} does not exist") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise BadPath(f"{rel!r} is a symbolic link: links are never followed") from None
                raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise IsADirectory(f"{rel!r} is a folder")
            raise BadPath(f"{rel!r} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def stat(self, tenant: str, user: str, scope: Scope, path: str) -> FileEntry:
        rel = self._check(tenant, scope, path)
        parts = rel.split("/")
        with self._scope(tenant, user, scope) as base, closing(open_parent(base, parts)) as parent:
            st = _lstat(parent, parts[-1], rel)
        return FileEntry(
            rel, 0 if stat.S_ISDIR(st.st_mode) else st.st_size, st.st_mtime, stat.S_ISDIR(st.st_mode)
        )

    def require_file(self, tenant: str, user: str, path: str) -> FileEntry:
        """The user's file ``path``: :class:`NotFound`, :class:`IsADirectory` or :class:`BadPath` else."""
        entry = self.stat(tenant, user, "user", path)
        if entry.is_dir:
            raise IsADirectory(f"{entry.path!r} is a folder, not a file")
        return entry

    def list(self, tenant: str, user: str, scope: Scope) -> builtins.list[FileEntry]:
        """Every file and folder, recursively, sorted by path (links and special files left out); in
        the tenant scope without the users' folders."""
        skip = frozenset(self.layout.users(tenant)) if scope == "tenant" else frozenset()
        with self._scope(tenant, user, scope) as base:
            return [
                FileEntry(
                    e.path,
                    0 if stat.S_ISDIR(e.st.st_mode) else e.st.st_size,
                    e.st.st_mtime,
                    stat.S_ISDIR(e.st.st_mode),
                )
                for e in walk(base, skip=skip)
                if stat.S_ISDIR(e.st.st_mode) or stat.S_ISREG(e.st.st_mode)
            ]

    def delete(self, tenant: str, user: str, scope: Scope, path: str) -> None:
        """Delete a file, or a folder that is empty."""
        rel = self._check(tenant, scope, path)
        parts = rel.split("/")
        with self._scope(tenant, user, scope) as base, closing(open_parent(base, parts)) as parent:
            st = _lstat(parent, parts[-1], rel)
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(parts[-1], dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise DirectoryNotEmpty(f"{rel!r} is a folder that is not empty") from None
                    raise
            else:
                os.unlink(parts[-1], dir_fd=parent)
        self.quotas.adjust(tenant, user, scope, -(0 if stat.S_ISDIR(st.st_mode) else st.st_size), -1)

    # -- quotas -----------------------------------------------------------------------------------
    def usage(self, tenant: str, user: str) -> Usage:
        self.ensure(tenant, user)
        return self.quotas.usage(tenant, user)

    def check_quota(self, tenant: str, user: str, *, max_age_s: float = 0.0) -> QuotaExceeded | None:
        """After code ran: walk the tenant's folder again (and, as root, give back to uid 0 and the
        expected group what a session left with other ids) and say which quota is exceeded, if any; a
        walk younger than ``max_age_s`` is taken instead (see :meth:`Quotas.exceeded`)."""
        self.ensure(tenant, user)
        return self.quotas.exceeded(tenant, user, max_age_s=max_age_s)

    def check_after_code(self, tenant: str, user: str) -> QuotaExceeded | None:
        """:meth:`check_quota` after a cell ran, with a walk up to AFTER_CODE_MAX_AGE_S old."""
        return self.check_quota(tenant, user, max_age_s=AFTER_CODE_MAX_AGE_S)

    # -- internals --------------------------------------------------------------------------------
    def _check(self, tenant: str, scope: Scope, path: str) -> str:
        if scope not in ("user", "tenant"):
            raise BadPath(f"scope {scope!r} is neither 'user' nor 'tenant'")
        rel = check_path(path)
        top = rel.split("/")[0]
        if scope == "tenant" and top in self.layout.users(tenant):
            raise BadPath(f"{top!r} is a user's folder, not part of the shared folder (scope=tenant)")
        return rel

    @contextlib.contextmanager
    def _scope(self, tenant: str, user: str, scope: Scope) -> Iterator[int]:
        self.ensure(tenant, user)
        with self.layout.folder(tenant, "the tenant's folder") as tfd:
            if scope == "tenant":
                yield tfd
                return
            with closing(self.layout.open(tfd, user, "the user's folder")) as ufd:
                yield ufd

    @contextlib.contextmanager
    def _staged(self, data: bytes | Iterable[bytes]) -> Iterator[tuple[int, str, int]]:
        """``data`` in a new file of ``.staging``: (its folder's fd, its name, its size); removed
        afterwards unless it was moved away. :class:`TooLarge` past ``max_upload_bytes``."""
        name = f"w-{secrets.token_hex(8)}"
        with self.layout.folder(".staging", "the staging folder") as staging:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=staging,
            )
            try:
                size = 0
                with os.fdopen(fd, "wb", closefd=False) as f:
                    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                        size += len(chunk)
                        if size > self.max_upload_bytes:
                            raise TooLarge(
                                f"the upload is larger than the limit of {self.max_upload_bytes:,} bytes "
                                "(service.max_upload_mib)"
                            )
                        f.write(chunk)
                os.fchmod(fd, 0o644)
                os.fsync(fd)
                os.close(fd)
                fd = -1
                yield staging, name, size
            finally:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=staging)

    def _existing(self, base: int, parts: builtins.list[str]) -> int | None:
        """The size of the file that a write to ``parts`` replaces (None: none there)."""
        with closing(open_parent(base, parts)) as parent:
            try:
                st = _lstat(parent, parts[-1], "/".join(parts))
            except NotFound:
                return None
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectory(f"{'/'.join(parts)!r} is a folder")
        return st.st_size


def _lstat(parent: int, name: str, rel: str) -> os.stat_result:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound(f"{rel!r} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadPath(f"{rel!r} is a symbolic link: links are never followed")
    return st
