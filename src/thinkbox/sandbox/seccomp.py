"""The sandbox's seccomp filter, built with libseccomp (PyPI ``pyseccomp``), never hand-written BPF.

Default action ALLOW; EPERM for at least what Docker's default profile refuses to an unprivileged
container: new namespaces, the keyring, bpf, io_uring, perf events, ptrace, kernel modules, mounts,
clock changes, raw and netlink sockets, and the like. ``clone3`` answers ENOSYS so glibc falls back to
``clone``, whose flags the filter can inspect (Docker does the same).

Used by the zygote (:func:`load` in the session's process) and by bwrap (:func:`export_bpf` for
``bwrap --seccomp FD``). Syscalls the installed libseccomp does not know are skipped (listed by
:func:`unknown_syscalls`), so an old libseccomp weakens the filter visibly instead of failing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
from typing import IO, Any

import pyseccomp as sc

# Denied outright (EPERM), whatever the arguments.
DENIED = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "iopl",
    "ioperm",
    "fanotify_init",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "pidfd_getfd",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
)

# Namespace flags of clone(2): any of them is refused.
CLONE_NEW_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
_SOCK_PACKET = 10
_EPERM = sc.ERRNO(errno.EPERM)


def _known(name: str) -> bool:
    try:
        return int(sc.resolve_syscall(sc.Arch.NATIVE, name)) >= 0
    except (OSError, ValueError):
        return False


def unknown_syscalls() -> list[str]:
    """Names of the filter that the installed libseccomp cannot resolve on this architecture."""
    return [name for name in (*DENIED, "clone", "clone3", "personality", "socket") if not _known(name)]


def build_filter() -> sc.SyscallFilter:
    """The filter, compiled but not loaded. Foreign architectures (32-bit syscalls) are killed."""
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.CTL_NNP, 1)
    for name in DENIED:
        if _known(name):
            f.add_rule(_EPERM, name)
    if _known("clone3"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NEW_FLAGS.values():  # x86-64 clone(flags, ...): flags is argument 0
        f.add_rule(_EPERM, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # personality(2): only the default persona (and the query 0xffffffff) is allowed.
    # libseccomp takes one comparison per argument, so "neither 0 nor 0xffffffff" is written as a union
    # over the low 31 bits b: (bit 31 clear and bit b set) or (bit 31 set and bit b clear).
    top = 1 << 31
    for bit in range(31):
        mask = top | (1 << bit)
        f.add_rule(_EPERM, "personality", sc.Arg(0, sc.MASKED_EQ, mask, 1 << bit))
        f.add_rule(_EPERM, "personality", sc.Arg(0, sc.MASKED_EQ, mask, top))
    for family in (socket.AF_NETLINK, socket.AF_PACKET):
        f.add_rule(_EPERM, "socket", sc.Arg(0, sc.EQ, int(family)))
    for sock_type in (int(socket.SOCK_RAW), _SOCK_PACKET):
        f.add_rule(_EPERM, "socket", sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, sock_type))
    return f


# Where each call takes the mode whose setuid/setgid bits are refused by build_nosuid_filter().
MODE_ARGUMENT = {
    "chmod": 1,
    "fchmod": 1,
    "fchmodat": 2,
    "fchmodat2": 2,
    "open": 2,
    "openat": 3,
    "creat": 1,
    "mknod": 1,
    "mknodat": 2,
}


def build_nosuid_filter() -> sc.SyscallFilter:
    """A second filter: no setuid/setgid bits on any file the sandbox creates or changes.

    A session's files belong to its kernel uid, which outside the sandbox is a real user (the engine's
    own user in unprivileged mode): a setuid file left in a read-write host mount would be a way into that
    user for anyone on the host. ``openat2`` (its mode sits in a struct) answers ENOSYS, so libc falls
    back to ``openat``. libseccomp takes one comparison per argument, hence a separate filter.
    """
    f = sc.SyscallFilter(sc.ALLOW)
    for name, arg in MODE_ARGUMENT.items():
        if _known(name):
            for bit in (stat.S_ISUID, stat.S_ISGID):
                f.add_rule(_EPERM, name, sc.Arg(arg, sc.MASKED_EQ, bit, bit))
    if _known("openat2"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), "openat2")
    return f


def load() -> None:
    """Install the filter in the calling process (sets NO_NEW_PRIVS first; irreversible)."""
    build_filter().load()


def export_bpf(fileobj: IO[Any]) -> None:
    """Write the compiled BPF program to ``fileobj`` (a real file: ``bwrap --seccomp FD`` reads it)."""
    fileobj.flush()
    build_filter().export_bpf(fileobj)


def compile_program(flt: sc.SyscallFilter | None = None) -> bytes:
    """A filter (default :func:`build_filter`) as libseccomp compiles it (BPF bytes), to install many
    times with :func:`load_program`: libseccomp regenerates the program on every ``seccomp_load``, a fork
    server compiles it once."""
    fd = os.memfd_create("thinkbox-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as f:
        (flt or build_filter()).export_bpf(f)
        f.seek(0)
        return f.read()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


def load_program(program: bytes) -> None:
    """Install a program from :func:`compile_program` in the calling thread (NO_NEW_PRIVS set first)."""
    if not program or len(program) % 8:
        raise ValueError("not a compiled seccomp program (its length must be a positive multiple of 8)")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    calls = ((_PR_SET_NO_NEW_PRIVS, 1), (_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog)))
    for call in calls:
        args = [ctypes.c_ulong(a) for a in call] + [ctypes.c_ulong(0)] * (5 - len(call))
        if libc.prctl(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl{call[:2]} (seccomp): {os.strerror(err)}")
