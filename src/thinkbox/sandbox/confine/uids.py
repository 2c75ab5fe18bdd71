"""Host uids for sessions, and the engine's private runtime directory.

As root, every zygote session runs as a host uid of its own. The kernel keeps several quotas per uid
(RLIMIT_NPROC, inotify instances and watches, pipe buffer pages, pending signals, POSIX message queues),
so two sessions must never share one, not even when they belong to different engines (two services, or
the service and a command-line run). Each engine therefore reserves a **block** of 65,536 uids by holding
an exclusive ``flock`` on ``/run/thinkbox/uids/<k>`` for its lifetime: the lock goes away with the process,
however it ends, so a crashed engine's block is free again at once.

Blocks start at 0x70000000 (1,879,048,192): above the ranges that /etc/subuid usually hands out (100000
upwards, 65,536 per user) and above systemd's container range (524288-1879048191), below 2^31. Uid
``base`` itself is the sessions' init (tini); sessions use ``base + 1`` onwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from thinkbox.errors import SandboxUnavailable

FIRST_UID = 0x70000000
BLOCK_SIZE = 65536
BLOCKS = 2048
LOCK_DIR = Path("/run/thinkbox/uids")


@dataclass
class UidBlock:
    """Uids ``base`` .. ``base + BLOCK_SIZE - 1``, reserved while ``fd`` stays open and locked."""

    base: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def reserve(lock_dir: Path = LOCK_DIR) -> UidBlock:
    """The first block no live engine holds (raises OSError when all are taken or the dir is unusable)."""
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for k in range(BLOCKS):
        fd = os.open(lock_dir / str(k), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        return UidBlock(FIRST_UID + k * BLOCK_SIZE, fd)
    raise OSError(f"all {BLOCKS} uid blocks under {lock_dir} are held by running engines")


def private_dir(path: Path) -> Path:
    """``path`` as a directory of our own, mode 0700, made if missing. A name in a shared directory such
    as /tmp is predictable: another user could have made it (or a symlink) first; that is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SandboxUnavailable(
            f"{path} is not a private directory of this user (a symlink, another owner, or group/other "
            "access): remove it, or set XDG_RUNTIME_DIR to a private directory"
        )
    return path
