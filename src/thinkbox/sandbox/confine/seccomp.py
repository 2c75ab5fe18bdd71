"""The sandbox's seccomp filter, built with libseccomp (PyPI ``pyseccomp``), never hand-written BPF.

An allow-list. :data:`ALLOWED` names the syscalls a session may make whatever their arguments; three
more are allowed with some arguments only (below). Every other syscall, including any that a later
kernel adds, answers ENOSYS, the answer libc expects from a kernel without it (glibc then falls back to
an older call where there is one). The known-dangerous syscalls of :data:`DENIED` (new namespaces,
mounts, the keyring, bpf, io_uring, perf events, ptrace, kernel modules, clock changes, and the like)
answer EPERM instead.

Allowed with conditions (x86-64 argument order; a condition on an ``int`` argument compares the low
32 bits, the ones the kernel reads):

- ``clone``: not with ``CLONE_PARENT`` (the new process would be a sibling of the caller, outside the
  session's process accounting) nor any ``CLONE_NEW*`` flag: EPERM. ``clone3`` answers ENOSYS, so
  glibc falls back to ``clone``, whose flags the filter can inspect (Docker does the same);
- ``personality``: the default persona and the query 0xffffffff only (EPERM otherwise);
- ``socket``: families AF_UNIX, AF_INET, AF_INET6 with types SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
  (SOCK_NONBLOCK and SOCK_CLOEXEC aside). AF_NETLINK, AF_PACKET and AF_VSOCK (which reaches the
  hypervisor: no network namespace covers it), and the types SOCK_RAW and SOCK_PACKET, answer EPERM;
  other families and types ENOSYS.

Whatever it allows, Docker's default profile allows too (the tests compare the two); of Docker's set, what
a Python session does not need is left out. Syscalls of foreign architectures (32-bit x86) kill the
process. :func:`rules` gives every rule as data: the docker backend writes them as its seccomp profile.
The zygote loads the filter with :func:`compile_program` and :func:`load_program`, bwrap with
:func:`export_bpf` (``bwrap --add-seccomp-fd``). Names the installed libseccomp does not know are
skipped (listed by :func:`unknown_syscalls`): such a syscall answers ENOSYS, like any unlisted one.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import stat
from typing import IO, Any, NamedTuple

import pyseccomp as sc


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Allowed whatever the arguments (x86-64 names). Docker's default profile also allows, and this leaves
# out: io_uring_*, adjtimex, clock_adjtime, name_to_handle_at, ptrace, process_vm_* (all in DENIED);
# seccomp, landlock_*, pkey_*, memfd_secret, modify_ldt, get/set_thread_area (32-bit TLS),
# epoll_ctl_old and epoll_wait_old (never implemented), remap_file_pages (deprecated), vmsplice,
# fanotify_mark (fanotify_init is refused), process_mrelease, openat2 (the nosuid filter could not see
# its mode), POSIX message queues (mq_*) and System V message queues (msg*): nothing that a Python
# session, its threads, subprocesses and a shell running coreutils need.
ALLOWED = _words(
    """
    read write readv writev pread64 pwrite64 preadv preadv2 pwritev pwritev2 lseek sendfile
    copy_file_range splice tee open openat creat close close_range dup dup2 dup3 fcntl flock ioctl
    stat fstat lstat newfstatat statx statfs fstatfs access faccessat faccessat2 getdents getdents64
    getcwd chdir fchdir mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink
    symlinkat readlink readlinkat chmod fchmod fchmodat chown fchown fchownat lchown umask mknod mknodat
    truncate ftruncate fallocate fsync fdatasync sync syncfs sync_file_range fadvise64 readahead utime
    utimes utimensat futimesat getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr
    lsetxattr fsetxattr removexattr lremovexattr fremovexattr
    pipe pipe2 eventfd eventfd2 signalfd signalfd4 timerfd_create timerfd_gettime timerfd_settime
    memfd_create inotify_init inotify_init1 inotify_add_watch inotify_rm_watch epoll_create
    epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 poll ppoll select pselect6 io_setup
    io_destroy io_submit io_cancel io_getevents io_pgetevents
    brk mmap munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock munlockall
    membarrier shmget shmat shmdt shmctl semget semop semtimedop semctl
    fork vfork execve execveat exit exit_group wait4 waitid kill tkill tgkill pidfd_open
    pidfd_send_signal set_tid_address set_robust_list get_robust_list futex futex_waitv rseq arch_prctl
    prctl getpid getppid gettid getpgid setpgid getpgrp getsid setsid getuid geteuid getgid getegid
    getresuid getresgid getgroups setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid
    setgroups capget capset getpriority setpriority ioprio_get ioprio_set sched_yield sched_getaffinity
    sched_setaffinity sched_getattr sched_setattr sched_getparam sched_setparam sched_getscheduler
    sched_setscheduler sched_get_priority_max sched_get_priority_min sched_rr_get_interval getcpu
    getrlimit setrlimit prlimit64 getrusage times sysinfo uname
    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait rt_sigqueueinfo
    rt_tgsigqueueinfo sigaltstack restart_syscall pause alarm getitimer setitimer nanosleep
    clock_nanosleep clock_gettime clock_getres gettimeofday time timer_create timer_delete
    timer_getoverrun timer_gettime timer_settime getrandom
    socketpair bind connect listen accept accept4 getsockname getpeername getsockopt setsockopt sendto
    sendmsg sendmmsg recvfrom recvmsg recvmmsg shutdown
    """
)

# Refused (EPERM), whatever the arguments.
DENIED = _words(
    """
    unshare setns mount umount2 pivot_root chroot sethostname setdomainname keyctl add_key request_key bpf
    io_uring_setup io_uring_enter io_uring_register perf_event_open ptrace process_vm_readv
    process_vm_writev process_madvise kcmp kexec_load kexec_file_load init_module finit_module
    delete_module create_module reboot swapon swapoff syslog acct settimeofday clock_settime
    clock_adjtime adjtimex stime open_by_handle_at name_to_handle_at userfaultfd lookup_dcookie quotactl
    quotactl_fd vhangup iopl ioperm fanotify_init move_mount open_tree fsopen fsmount fsconfig fspick
    mount_setattr pidfd_getfd get_kernel_syms query_module nfsservctl uselib ustat sysfs _sysctl vm86
    vm86old
    """
)

# Namespace flags of clone(2): any of them is refused. (CLONE_NEWTIME, 0x80, exists for clone3 and
# unshare only, both refused: in clone's flags that bit belongs to the exit signal.)
CLONE_NEW_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_PARENT = 0x00008000
CLONE_REFUSED = CLONE_PARENT | sum(CLONE_NEW_FLAGS.values())
"""clone's flags (x86-64: argument 0) may have none of these bits."""

PERSONALITIES = (0, 0xFFFFFFFF)
"""personality(2) arguments allowed: the default persona and the query."""

SOCKET_FAMILIES = (int(socket.AF_UNIX), int(socket.AF_INET), int(socket.AF_INET6))
SOCKET_TYPES = (int(socket.SOCK_STREAM), int(socket.SOCK_DGRAM), int(socket.SOCK_SEQPACKET))
"""socket(2) is allowed for these families with these types (the session's loopback, Unix sockets)."""

REFUSED_SOCKET_FAMILIES = (int(socket.AF_NETLINK), int(socket.AF_PACKET), 40)  # 40: AF_VSOCK
REFUSED_SOCKET_TYPES = (int(socket.SOCK_RAW), 10)  # 10: SOCK_PACKET
"""socket(2) with one of these families, or one of these types, answers EPERM."""

_LOW32 = 0xFFFFFFFF  # int arguments: the kernel reads the low 32 bits of the register only
_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
_EPERM = errno.EPERM


class Rule(NamedTuple):
    """One rule of the filter. ``errno`` None allows the call, otherwise it fails with that errno. The rule
    applies when every ``(index, mask, value)`` of ``args`` holds: ``argument[index] & mask == value``."""

    name: str
    errno: int | None
    args: tuple[tuple[int, int, int], ...] = ()


def _bits(mask: int) -> list[int]:
    return [1 << b for b in range(64) if mask >> b & 1]


def rules() -> list[Rule]:
    """Every rule of :func:`build_filter`, as data (the docker backend writes them as its profile).

    Rules of one syscall with different outcomes never overlap: libseccomp (and Docker, through runc and
    libseccomp) defines no order between two matching rules, and an unconditional rule replaces the
    conditional ones. So each conditional outcome is spelled out as disjoint cases; argument values that no
    rule covers take the default action (ENOSYS).
    """
    out = [Rule(name, None) for name in ALLOWED]
    out += [Rule(name, _EPERM) for name in DENIED]
    out.append(Rule("clone3", errno.ENOSYS))
    out.append(Rule("clone", None, ((0, CLONE_REFUSED, 0),)))
    out += [Rule("clone", _EPERM, ((0, bit, bit),)) for bit in _bits(CLONE_REFUSED)]
    out += [Rule("personality", None, ((0, _LOW32, persona),)) for persona in PERSONALITIES]
    # libseccomp takes one comparison per argument, so "neither 0 nor 0xffffffff" is written as a union
    # over the low 31 bits b: (bit 31 clear and bit b set) or (bit 31 set and bit b clear).
    top = 1 << 31
    for bit in _bits(top - 1):
        out.append(Rule("personality", _EPERM, ((0, top | bit, bit),)))
        out.append(Rule("personality", _EPERM, ((0, top | bit, top),)))
    for family in SOCKET_FAMILIES:
        for sock_type in SOCKET_TYPES:
            out.append(Rule("socket", None, ((0, _LOW32, family), (1, _SOCK_TYPE_MASK, sock_type))))
    out += [Rule("socket", _EPERM, ((0, _LOW32, family),)) for family in REFUSED_SOCKET_FAMILIES]
    out += [Rule("socket", _EPERM, ((1, _SOCK_TYPE_MASK, t),)) for t in REFUSED_SOCKET_TYPES]
    return out


@functools.cache
def _known(name: str) -> bool:
    try:
        return int(sc.resolve_syscall(sc.Arch.NATIVE, name)) >= 0
    except (OSError, ValueError):
        return False


def unknown_syscalls() -> list[str]:
    """Names of the filter that the installed libseccomp cannot resolve on this architecture (skipped:
    such a syscall answers ENOSYS, like any other the filter does not list)."""
    return list(dict.fromkeys(rule.name for rule in rules() if not _known(rule.name)))


def unlisted_syscalls() -> list[str]:
    """This architecture's syscalls that the installed libseccomp knows and no rule names: they answer the
    default, ENOSYS (Docker 20.10 ignores a profile's default errno and needs them spelled out)."""
    named = {rule.name for rule in rules()}
    out = []
    for number in range(1024):
        try:
            name = sc.resolve_syscall(sc.Arch.NATIVE, number)
        except (OSError, ValueError):
            continue
        if isinstance(name, bytes) and name.decode() not in named:
            out.append(name.decode())
    return out


def build_filter() -> sc.SyscallFilter:
    """The filter, compiled but not loaded. Foreign architectures (32-bit syscalls) are killed."""
    f = sc.SyscallFilter(sc.ERRNO(errno.ENOSYS))
    f.set_attr(sc.Attr.CTL_NNP, 1)
    for rule in rules():
        # libseccomp refuses a rule whose action is the default one (clone3's ENOSYS)
        if _known(rule.name) and (rule.args or rule.errno != errno.ENOSYS):
            action = sc.ALLOW if rule.errno is None else sc.ERRNO(rule.errno)
            f.add_rule(action, rule.name, *(sc.Arg(i, sc.MASKED_EQ, m, v) for i, m, v in rule.args))
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
                f.add_rule(sc.ERRNO(_EPERM), name, sc.Arg(arg, sc.MASKED_EQ, bit, bit))
    if _known("openat2"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), "openat2")
    return f


def load() -> None:
    """Install the filter in the calling process (sets NO_NEW_PRIVS first; irreversible)."""
    build_filter().load()


def export_bpf(fileobj: IO[Any], flt: sc.SyscallFilter | None = None) -> None:
    """Write a filter (default :func:`build_filter`) compiled to BPF to ``fileobj`` (a real file:
    ``bwrap --add-seccomp-fd FD`` reads it)."""
    fileobj.flush()
    (flt or build_filter()).export_bpf(fileobj)


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
