"""Paths of the files API, checked before anything is touched, and resolved without ever following a
symlink: every component is opened with ``O_NOFOLLOW`` relative to the fd of its parent (``openat``),
so a symlink that sandbox code planted (to ``/etc``, to another user's folder, as a parent folder) is
refused, not followed, and a folder swapped for a symlink meanwhile cannot redirect a later step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from thinkbox.service.storage.errors import BadPath, NotADirectory, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Tenant and user names (the accounts code checks them too): they are folder names."""
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise BadPath(f"{what} name {name!r} is not valid: lower-case letters, digits, '_' and '-'")
    return name


def check_path(path: str) -> str:
    """``path`` normalised (no empty or ``.`` components, no trailing slash), or :class:`BadPath`.

    Refused: an empty path, an absolute one, any ``..`` component, NUL and other control characters,
    backslashes (a client that means a separator would get a file named ``a\\..\\b``), what is not valid
    UTF-8, a component over 255 bytes or a path over 1024 bytes (UTF-8).
    """
    if not isinstance(path, str) or not path:
        raise BadPath("the path is empty: name a file or folder")
    if path.startswith("/"):
        raise BadPath(f"{_show(path)} is absolute: paths are relative to the folder")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise BadPath(f"{_show(path)} holds a control character (NUL, newline, ...)")
    if "\\" in path:
        raise BadPath(f"{_show(path)} holds a backslash: separate folders with '/'")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadPath(f"{_show(path)} is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise BadPath(f"the path has {size} bytes; at most {MAX_PATH_BYTES}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadPath(f"{_show(path)} climbs out with '..'")
    if not parts:
        raise BadPath(f"{_show(path)} names the folder itself: name a file or folder in it")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise BadPath(f"a name in the path has over {MAX_COMPONENT_BYTES} bytes: {_show(part)}")
    return "/".join(parts)


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def open_dir(parent: int, name: str, shown: str) -> int:
    """An fd of the folder ``name`` in ``parent``: :class:`BadPath` for a symlink, :class:`NotADirectory`
    for anything else that is not a folder, :class:`NotFound` when nothing is there."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise NotFound(f"{shown} does not exist") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    kind = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    if stat.S_ISLNK(kind):
        raise BadPath(f"{shown} is a symbolic link: links are never followed")
    raise NotADirectory(f"{shown} is a file, not a folder")


def open_parent(base: int, parts: list[str], *, create: bool = False) -> int:
    """An fd of the folder holding ``parts[-1]``, walked from ``base`` without following symlinks
    (missing folders made with ``create``). The caller closes it."""
    fd = os.dup(base)
    try:
        for i, part in enumerate(parts[:-1]):
            shown = "/".join(parts[: i + 1])
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            nxt = open_dir(fd, part, repr(shown))
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def missing_parents(base: int, parts: list[str]) -> int:
    """How many of the folders above ``parts[-1]`` do not exist yet (checked like :func:`open_parent`)."""
    fd = os.dup(base)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nxt = open_dir(fd, part, repr("/".join(parts[: i + 1])))
            except NotFound:
                return len(parts) - 1 - i
            os.close(fd)
            fd = nxt
        return 0
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    """One thing found by :func:`walk`: its path relative to the walk's top, its lstat, and its name in
    the folder ``dir_fd`` (open only until the walk moves on)."""

    path: str
    st: os.stat_result
    dir_fd: int
    name: str


def walk(top: int, prefix: str = "", skip: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Everything below the folder fd ``top`` (parents before children), never through a symlink; the
    names in ``skip`` are left out at the top level only. Entries that vanish meanwhile are skipped."""
    found = []
    with os.scandir(top) as it:
        for e in it:
            if e.name not in skip:
                with contextlib.suppress(FileNotFoundError):
                    found.append((e.name, e.stat(follow_symlinks=False)))
    found.sort()
    for name, st in found:
        path = f"{prefix}{name}"
        yield Entry(path, st, top, name)
        if stat.S_ISDIR(st.st_mode):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=top)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_ino == st.st_ino:  # still the folder that was listed
                    yield from walk(fd, path + "/")
            finally:
                os.close(fd)


@contextlib.contextmanager
def closing(fd: int) -> Iterator[int]:
    """``fd``, closed on leaving."""
    try:
        yield fd
    finally:
        os.close(fd)
