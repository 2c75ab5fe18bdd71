"""Thin ctypes wrappers over the Linux calls the zygote needs and Python 3.11 lacks.

unshare, setns, mount, umount2, pivot_root, sethostname, capset and prctl (NO_NEW_PRIVS, child
subreaper, death signal, capability bounding set). Each raises ``OSError`` naming the call and its
arguments.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import platform
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(res: int, what: str) -> None:
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring up ``lo`` of the current network namespace (a new one starts with it down): the session's
    own 127.0.0.1, where the egress relay listens (:mod:`thinkbox.sandbox.inside.relay`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    res = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(res, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def bind(source: str, target: str, *, read_only: bool, recursive: bool = False) -> None:
    """Bind ``source`` on ``target``, nosuid and nodev, read-only if asked: on every submount too when
    ``recursive`` (a remount changes one mount only; submounts of a read-only source would stay writable).
    """
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    restrict(target, read_only=read_only, recursive=recursive)


def restrict(target: str, *, read_only: bool, recursive: bool) -> None:
    """Make the mount at ``target`` (and with ``recursive`` every mount below it) nosuid, nodev and, with
    ``read_only``, read-only: ``mount_setattr(AT_RECURSIVE)`` (Linux 5.12+), else a remount per mount."""
    attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if read_only else 0)
    if recursive and _mount_setattr(target, attrs):
        return
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    for point in submounts(target) if recursive else [target]:
        mount(None, point, None, flags)


MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the tables were unified)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _mount_setattr(target: str, attrs: int) -> bool:
    """Set ``attrs`` on the mount tree at ``target``; False where the kernel lacks mount_setattr."""
    attr = _MountAttr(attrs, 0, 0, 0)
    res = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_long(_AT_FDCWD),
        ctypes.c_char_p(_b(target)),
        ctypes.c_long(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_long(ctypes.sizeof(attr)),
    )
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter of an outer sandbox refuses it
        return False
    raise OSError(err, f"mount_setattr({target!r}, {attrs:#x}, AT_RECURSIVE): {os.strerror(err)}")


def submounts(target: str) -> list[str]:
    """``target`` and every mount point below it in this mount namespace, parents first."""
    base = os.path.realpath(target).rstrip("/") or "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == base or point.startswith(base.rstrip("/") + "/"):
                points.append(point)
    return sorted(dict.fromkeys(points), key=len) or [target]


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({target!r}, {flags})")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(0, f"pivot_root: unsupported architecture {platform.machine()}")
    _check(_libc.syscall(nr, _b(new_root), _b(put_old)), f"pivot_root({new_root!r}, {put_old!r})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    res = int(_libc.prctl(option, arg2, arg3, arg4, arg5))
    if res < 0:
        _check(res, f"prctl({option}, {arg2})")
    return res


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


CAP_SETGID = 6
CAP_SETUID = 7


def drop_bounding_set(last_cap: int, keep: frozenset[int] = frozenset()) -> None:
    """Empty the capability bounding set (but ``keep``) and the ambient set (needs CAP_SETPCAP: call
    before setuid)."""
    for cap in range(last_cap + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def capabilities_of_self() -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of the calling process, from /proc/self/status."""
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, _, value = line.partition(":")
                caps[key] = int(value.strip(), 16)
    return caps


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets of the calling thread (capset(2))."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset(0)")


def write_id_maps(uid: int, gid: int) -> None:
    """Map root inside a fresh user namespace onto ``uid``/``gid`` outside (unprivileged mode)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def open_nofollow(path: str) -> int:
    """An ``O_PATH`` fd of the absolute directory ``path``, opened component by component, refusing any
    symlink on the way (a mount source checked once must not be redirected by a symlink swapped in later).
    """
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, f"{path!r} is not an absolute path")
    return _walk("/", path, create=False, what=repr(path))


def open_beneath(base: str, relative: str, *, create: bool = True) -> int:
    """An ``O_PATH`` fd of directory ``base/relative``, created as needed (with ``create``), never
    following a symlink.

    Mount targets inside a workspace the sandbox could write must not be resolved through its symlinks
    (``data -> /etc`` would put a mount, or a new directory, on the host). Mount on ``/proc/self/fd/N``.
    """
    return _walk(base, relative, create=create, what=f"mount target {relative!r}")


def _walk(base: str, relative: str, *, create: bool, what: str) -> int:
    """Open ``base`` then each component of ``relative`` with ``O_NOFOLLOW`` (``..`` refused), making
    missing directories with ``create``; an fd of the last one."""
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in relative.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EINVAL, f"{what} climbs with '..'")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise OSError(exc.errno, f"{what}: {part!r} is not a plain directory") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- idmapped mounts (Linux 5.12+) -----------------------------------------------------------------------
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_IDMAP = 0x100000


def userns_fd(uid_map: str, gid_map: str) -> int:
    """An fd of a new, empty user namespace with these maps ("inside outside count" lines): a child
    unshares it and waits while the caller (root) writes the maps. Its only use is an idmapped mount.
    Call from a single-threaded process."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(ready_r)
            os.close(done_w)
            unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.EPERM, "userns_fd: the child could not create a user namespace")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def bind_idmapped(source_fd: int, target_fd: int, userns: int, *, read_only: bool, what: str) -> None:
    """Bind the directory ``source_fd`` (not its submounts) on ``target_fd``, nosuid, nodev, read-only
    if asked, with the ids of the user namespace ``userns`` (an idmapped mount: open_tree, mount_setattr,
    move_mount). ``what`` names the source in errors."""
    flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH
    tree = int(
        _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(source_fd), b"", ctypes.c_uint(flags))
    )
    if tree < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree({what}): {os.strerror(err)}")
    try:
        attrs = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        attr = _MountAttr(attrs | (MOUNT_ATTR_RDONLY if read_only else 0), 0, 0, userns)
        res = _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(tree),
            b"",
            ctypes.c_uint(_AT_EMPTY_PATH),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        if res != 0:
            err = ctypes.get_errno()
            hint = " (its filesystem or this kernel has no idmapped mounts)" if err == errno.EINVAL else ""
            raise OSError(err, f"idmapped mount of {what}: {os.strerror(err)}{hint}")
        flags = _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH
        tree_fd, to = ctypes.c_int(tree), ctypes.c_int(target_fd)
        res = _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), tree_fd, b"", to, b"", ctypes.c_uint(flags))
        if res != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"move_mount({what}): {os.strerror(err)}")
    finally:
        os.close(tree)


MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
_HUGE = 2 << 20
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def collapse_anonymous_memory() -> int:
    """Back the private anonymous memory of this process with 2 MiB pages where it can (MADV_COLLAPSE,
    Linux 6.1+); returns the bytes collapsed, 0 where the kernel cannot.

    A fork copies one page-table entry per 4 KiB page mapped, but one per 2 MiB page: for the zygote,
    most of what a session start costs. Regions that are not aligned 2 MiB blocks (Python's 1 MiB
    arenas between shared libraries) stay as they are.
    """
    done = 0
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        start, end = -(-lo // _HUGE) * _HUGE, hi // _HUGE * _HUGE
        if end > start:
            _libc.madvise(start, end - start, MADV_HUGEPAGE)
            if _libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
                done += end - start
    return done
