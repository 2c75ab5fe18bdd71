"""A bwrap session's user namespace, made by the engine as root and owned by a uid of its own.

The kernel counts per-user quotas (inotify instances and watches, queued signals, message queue bytes,
processes) at every level of the user namespace tree, and at the host's level against the uid that
*owns* the namespace. A namespace that ``bwrap --unshare-user`` makes as root is owned by root, so a
session that took its 128 inotify instances took the host root's. Here the namespace is made by a short
helper (util-linux's ``unshare``) running as a uid from the engine's reserved block
(:mod:`thinkbox.sandbox.confine.uids`), one per session; root then writes its maps (the session's uid
and gid to the host identities it acts as, as before), and ``bwrap --userns FD`` enters it. The open
descriptor keeps the namespace alive, so the helper ends at once.
"""

from __future__ import annotations

import logging
import os
import subprocess

from thinkbox.sandbox.confine import uids

log = logging.getLogger(__name__)

UNSHARE = "/usr/bin/unshare"
"""util-linux's ``unshare``: the helper must be a program the owner uid may run (not the engine's Python,
which may sit in a directory private to root)."""


def owners() -> uids.UidBlock | None:
    """A reserved block of owner uids, or None where sessions keep bwrap's own namespace: an engine that
    is not root, no ``unshare``, or a host that lets no other uid make a user namespace (warned)."""
    if os.geteuid() != 0 or not os.access(UNSHARE, os.X_OK):
        return None
    block = None
    try:
        block = uids.reserve()
        os.close(make(block.base, 0, 0, 0))
    except OSError as exc:
        if block is not None:
            block.release()
        log.warning("bwrap sessions share root's per-user kernel quotas: %s", exc)
        return None
    return block


def make(owner: int, inside_id: int, host_uid: int, host_gid: int) -> int:
    """An ``O_CLOEXEC`` descriptor of a new user namespace owned by host uid ``owner``, in which
    ``inside_id`` (uid and gid) is ``host_uid``/``host_gid``. Raises ``OSError`` when it cannot."""
    helper = subprocess.Popen(
        [UNSHARE, "--user", "--", "/bin/sh", "-c", "echo ok; read _"],
        user=owner,
        group=owner,
        extra_groups=[],
        env={},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert helper.stdout is not None
        if helper.stdout.readline() != b"ok\n":
            helper.kill()
            _, err = helper.communicate()
            raise OSError(
                f"could not make the session's user namespace: {err.decode(errors='replace')[-300:]}"
            )
        pid = helper.pid
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(f"{inside_id} {host_uid} 1\n")
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny\n")
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(f"{inside_id} {host_gid} 1\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.kill()
        helper.communicate()
