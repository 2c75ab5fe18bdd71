"""The folders of tenants and users on disk, and the view a sandbox session gets of them.

Layout (``root`` is ``DATA_DIR/storage``)::

    root/<tenant>/            the tenant's shared folder: shared files and folders, and the users' folders
    root/<tenant>/<user>/     the user's own folder
    root/.users/<tenant>/     one empty file per user of the tenant (which subfolders are users' folders)
    root/.staging/            uploads being written and new user folders being made (same filesystem)

Inside a session of (tenant, user) the shared folder is ``/workspace/<tenant>`` and the user's folder
``/workspace/<tenant>/<user>``, the session's start directory: ``os.getcwd()`` names both, and ``..`` is
the shared folder. The other users' folders that exist when the session starts are covered by empty
read-only directories (``Mount.hide``): mounts, not permissions, keep them out.

Ownership, and users created after a session started. As root the engine runs every zygote session as
a uid of its own (one per session slot), so plain binds would leave files that the next session of the
same user cannot overwrite. Instead both folders are **idmapped mounts** (``Mount.owner``): on disk every
file belongs to the engine's uid 0, and each session sees it as its own, whichever uid it runs as; what it
creates is stored as uid 0 again. (Rather than ``umask 0`` plus a host walk that resets modes and
owners: no walk is needed before the next session, a ``chmod 600`` by code keeps its meaning, and no file
is left writable by every host user.) The two mounts map different groups, which is what closes the late-user
gap by ownership: the shared folder's mount maps uid 0 and gid 0, the user's folder's mount maps uid 0 and
gid :data:`FOLDER_ID`. A user's folder itself (its top directory only) is owned by :data:`FOLDER_ID`
(uid and gid, an id no process runs as) with mode 0770 and is made in ``.staging`` then renamed into place
(``RENAME_NOREPLACE``), so it appears with that ownership at once. Through its own user mount a session
reaches it by group; through the shared folder's mount its owner and group are unmapped: the folder can
be neither entered nor listed, renamed nor removed (the kernel refuses writes to files whose ids the
mount does not map). So a user created after a session of another user started shows up in that session
only as a name it cannot open, which no file is reachable through (tests/service/test_storage_sandbox.py).
bwrap sessions act as host uid 0 with gid :data:`FOLDER_ID` (see ``Mount.owner``): the same files are
theirs, but every user's folder is then open to them by group, so the covers are all that hides existing
users and a late user's folder is readable there: a gap stated in docs/security.md. An engine that is not
root runs every session as its own uid: everything belongs to it, user folders are 0700, and covers alone
hide other users (late users: the same gap).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from thinkbox.sandbox.types import Mount, SessionConfig
from thinkbox.service.storage.errors import NameTaken, NotFound, StorageError
from thinkbox.service.storage.paths import NAME, check_name, closing, open_dir

FOLDER_ID = 0x7FFFFFF0
"""Uid and gid of users' top folders (2147483632): above every block of session uids (which end at
0x78000000), below 2^31, used by no process."""
_RENAME_NOREPLACE = 1
_ATTEMPTS = 5
"""Tries at making a user's folder while something of that name keeps appearing (see ``_user_folder``)."""
_libc = ctypes.CDLL(None, use_errno=True)


class Layout:
    """The folders under ``root`` (``DATA_DIR/storage``), their owners and modes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()  # mount sources below it are then paths without symlinks
        self.privileged = os.geteuid() == 0
        me = (os.geteuid(), os.getegid())
        self.shared_owner = (0, 0) if self.privileged else me
        """``Mount.owner`` of the shared folder (files of other ids are read-only in sessions)."""
        self.user_owner = (0, FOLDER_ID) if self.privileged else me
        """``Mount.owner`` of a user's folder."""

    def ensure(self, tenant: str, user: str) -> Path:
        """Make the tenant's and the user's folders (idempotent; an empty folder made by other means is
        replaced, a registered user's folder gets its owner and mode back); the user's folder.
        :class:`NameTaken` when the shared folder holds something else of that name."""
        check_name(tenant, "tenant")
        check_name(user, "user")
        with self.root_fd() as root:
            with contextlib.suppress(FileExistsError):
                os.mkdir(tenant, 0o755, dir_fd=root)
            with closing(self.open(root, tenant, "the tenant's folder")) as tfd:
                registered = user in self.users(tenant)
                self._user_folder(root, tfd, user, registered)
                if not registered:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(f".users/{tenant}", 0o700, dir_fd=root)
                    os.close(
                        os.open(
                            f".users/{tenant}/{user}",
                            os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC,
                            0o600,
                            dir_fd=root,
                        )
                    )
        return self.root / tenant / user

    def users(self, tenant: str) -> list[str]:
        """The users whose folders are in the tenant's folder."""
        try:
            names = os.listdir(self.root / ".users" / check_name(tenant, "tenant"))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if NAME.match(n))

    def session_config(self, tenant: str, user: str, base: SessionConfig) -> SessionConfig:
        """``base`` (limits, environment, its own mounts) plus the view of the module docstring."""
        folder = self.ensure(tenant, user)
        others = tuple(u for u in self.users(tenant) if u != user)
        mounts = (
            *base.mounts,
            Mount(source=folder.parent, target=tenant, read_only=False, hide=others, owner=self.shared_owner),
            Mount(source=folder, target=f"{tenant}/{user}", read_only=False, owner=self.user_owner),
        )
        return SessionConfig(**{**dict(base), "mounts": mounts, "cwd": f"{tenant}/{user}"})  # validated

    @contextlib.contextmanager
    def root_fd(self) -> Iterator[int]:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_mode & 0o077:  # others have no business here (sessions get binds)
                os.fchmod(fd, 0o700)
            for name in (".users", ".staging"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=fd)
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def folder(self, name: str, what: str) -> Iterator[int]:
        """An fd of the folder ``root/name`` (``name`` one component), opened without following links."""
        with self.root_fd() as root, closing(self.open(root, name, what)) as fd:
            yield fd

    def open(self, parent: int, name: str, what: str) -> int:
        """``open_dir``, for the storage's own folders: one that is not a plain folder is damage."""
        try:
            return open_dir(parent, name, what)
        except NotFound:
            raise
        except StorageError as exc:
            raise StorageError(f"{what} in {self.root} is not a plain folder ({exc}); repair it") from None

    def _user_folder(self, root: int, tfd: int, user: str, registered: bool) -> None:
        """The user's folder in place with its owner and mode (see the module docstring).

        A folder of that name that the user is not registered for yet was made by other means (an older
        admin command, or code of the tenant's other users, which may hold it open): when empty it is
        removed and the user's folder made anew, never taken over in place, so that no earlier handle on
        it reaches what the user later keeps there."""
        uid, gid, mode = (FOLDER_ID, FOLDER_ID, 0o770) if self.privileged else (-1, -1, 0o700)
        for _ in range(_ATTEMPTS):
            try:
                st = os.stat(user, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                if self._new_user_folder(root, tfd, user, uid, gid, mode):
                    return
                continue  # made meanwhile by someone else: check it
            if not stat.S_ISDIR(st.st_mode):
                raise NameTaken(
                    f"the tenant's shared folder holds a file or link named {user!r}: rename or delete it, "
                    "then the user's folder can be made"
                )
            if stat.S_IMODE(st.st_mode) == mode and (
                not self.privileged or (st.st_uid, st.st_gid) == (uid, gid)
            ):
                return
            if registered:  # the user's own folder with its files, made by an older version
                with closing(self.open(tfd, user, "the user's folder")) as fd:
                    if self.privileged:
                        os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)
                return
            try:
                os.rmdir(user, dir_fd=tfd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise NameTaken(
                    f"the tenant's shared folder already holds a folder {user!r} with files in it; rename "
                    "it (it would become that user's private folder), then the user's folder can be made"
                ) from None
        raise NameTaken(
            f"a folder {user!r} keeps being made in the tenant's shared folder while the user's folder is "
            "made; stop the code that makes it, then try again"
        )

    def _new_user_folder(self, root: int, tfd: int, user: str, uid: int, gid: int, mode: int) -> bool:
        """Make the user's folder in ``.staging`` with its owner and mode, then rename it into place; False
        when something of that name appeared meanwhile."""
        name = f"u-{secrets.token_hex(8)}"
        with closing(self.open(root, ".staging", "the staging folder")) as staging:
            os.mkdir(name, 0o700, dir_fd=staging)
            os.chown(name, uid, gid, dir_fd=staging, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=staging)
            if _rename_noreplace(staging, name, tfd, user):
                return True
            os.rmdir(name, dir_fd=staging)
        return False


def _rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> bool:
    """renameat2(RENAME_NOREPLACE): False when ``dst`` exists."""
    res = _libc.renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), _RENAME_NOREPLACE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    raise OSError(err, f"renameat2({src!r}, {dst!r}, RENAME_NOREPLACE): {os.strerror(err)}")
