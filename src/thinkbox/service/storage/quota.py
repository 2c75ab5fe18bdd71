"""Quotas of a user's folder and of a tenant's storage (all its users together), in bytes and files.

Every file, folder, link and other entry below a folder counts as one file (a user's top folder itself
does not), and regular files count their apparent size. Uploads are checked before they land; what code
writes inside a session cannot be stopped mid-write from here, so :meth:`Quotas.exceeded` walks the
tenant's folder after each execution and answers with the error to show. Between walks, sizes are cached
for :data:`USAGE_TTL_S`, corrected by this process's own writes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from dataclasses import dataclass, field

from thinkbox.service.storage.errors import QuotaExceeded
from thinkbox.service.storage.layout import FOLDER_ID, Layout
from thinkbox.service.storage.paths import Entry, walk

USAGE_TTL_S = 2.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    user_bytes: int
    user_files: int
    tenant_bytes: int
    tenant_files: int


@dataclass
class _Tally:
    """One walk of a tenant's folder: [bytes, files] for the tenant and for each user's folder."""

    at: float
    tenant: list[int] = field(default_factory=lambda: [0, 0])
    users: dict[str, list[int]] = field(default_factory=dict)


class Quotas:
    """The limits and a short-lived cache of each tenant's usage."""

    def __init__(
        self,
        layout: Layout,
        *,
        user_quota_bytes: int,
        user_quota_files: int,
        tenant_quota_bytes: int,
        tenant_quota_files: int,
    ) -> None:
        self.layout = layout
        self.user_quota_bytes, self.user_quota_files = user_quota_bytes, user_quota_files
        self.tenant_quota_bytes, self.tenant_quota_files = tenant_quota_bytes, tenant_quota_files
        self._lock = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._tallies: dict[str, _Tally] = {}

    def usage(self, tenant: str, user: str) -> Usage:
        tally = self.tally(tenant, fresh=False)
        mine = tally.users.get(user, [0, 0])
        return Usage(mine[0], mine[1], tally.tenant[0], tally.tenant[1])

    def exceeded(self, tenant: str, user: str, *, max_age_s: float = 0.0) -> QuotaExceeded | None:
        """After code ran: walk the tenant's folder again (and, as root, give back to uid 0 and the
        expected group what a session may have left with other ids) and say which quota is exceeded.
        A walk of the tenant's folder younger than ``max_age_s`` is taken instead of a new one: small cells
        sent in a loop then cost one walk per ``max_age_s``, not one each (a tenant's folder may hold
        100,000 files)."""
        return self.verdict(self.tally(tenant, fresh=True, max_age_s=max_age_s), tenant, user)

    def recent(self, tenant: str, max_age_s: float) -> _Tally | None:
        """The tenant's last walk when it is younger than ``max_age_s`` (no disk access: for the event
        loop), else None."""
        with self._lock:
            cached = self._tallies.get(tenant)
        return cached if cached is not None and time.monotonic() - cached.at < max_age_s else None

    def verdict(self, tally: _Tally, tenant: str, user: str) -> QuotaExceeded | None:
        """Which quota ``tally`` shows exceeded, if any."""
        mine = tally.users.get(user, [0, 0])
        for scope, (used_bytes, used_files) in (("user", mine), ("tenant", tally.tenant)):
            for kind, used, limit in (
                ("bytes", used_bytes, self.limit(scope, "bytes")),
                ("files", used_files, self.limit(scope, "files")),
            ):
                if used > limit:
                    return _quota_error(tenant, user, scope, kind, used, limit)
        return None

    def tenant_lock(self, tenant: str) -> threading.Lock:
        with self._lock:
            return self._tenant_locks.setdefault(tenant, threading.Lock())

    def limit(self, scope: str, kind: str) -> int:
        if scope == "user":
            return self.user_quota_bytes if kind == "bytes" else self.user_quota_files
        return self.tenant_quota_bytes if kind == "bytes" else self.tenant_quota_files

    def check_room(self, tenant: str, user: str, scope: str, more_bytes: int, more_files: int) -> None:
        tally = self.tally(tenant, fresh=False)
        checks = [("tenant", tally.tenant)]
        if scope == "user":
            checks.insert(0, ("user", tally.users.get(user, [0, 0])))
        for where, (used_bytes, used_files) in checks:
            for kind, used, more in (("bytes", used_bytes, more_bytes), ("files", used_files, more_files)):
                limit = self.limit(where, kind)
                if more > 0 and used + more > limit:
                    raise _quota_error(tenant, user, where, kind, used + more, limit, upload=True)

    def adjust(self, tenant: str, user: str, scope: str, more_bytes: int, more_files: int) -> None:
        with self._lock:
            tally = self._tallies.get(tenant)
            if tally is None:
                return
            buckets = [tally.tenant] + ([tally.users.setdefault(user, [0, 0])] if scope == "user" else [])
            for bucket in buckets:
                bucket[0] += more_bytes
                bucket[1] += more_files

    def tally(self, tenant: str, *, fresh: bool, max_age_s: float = 0.0) -> _Tally:
        with self._lock:
            cached = self._tallies.get(tenant)
        if cached is not None and time.monotonic() - cached.at < (max_age_s if fresh else USAGE_TTL_S):
            return cached
        users = set(self.layout.users(tenant))
        tally = _Tally(time.monotonic(), users={u: [0, 0] for u in users})
        # top folders owned by FOLDER_ID (only the layout gives that owner) that ``users`` lacks: users'
        # folders made since the list was read; given back to uid 0, other users' sessions could enter them
        made: set[str] = set()
        with self.layout.folder(tenant, "the tenant's folder") as tfd:
            for e in walk(tfd):
                top, _, rest = e.path.partition("/")
                if not rest and e.st.st_uid == FOLDER_ID and stat.S_ISDIR(e.st.st_mode):
                    made.add(top)
                in_user = top in users
                if (in_user or top in made) and not rest:
                    continue  # a user's top folder: structure, not content
                counted = e.st.st_size if stat.S_ISREG(e.st.st_mode) else 0
                buckets = [tally.tenant] + ([tally.users[top]] if in_user else [])
                for bucket in buckets:
                    bucket[0] += counted
                    bucket[1] += 1
                if fresh and self.layout.privileged:
                    self._normalise(e, in_user or top in made)
        with self._lock:
            self._tallies[tenant] = tally
        return tally

    def _normalise(self, e: Entry, in_user: bool) -> None:
        """Give an entry that a session left with other ids (another backend, a copied file) back to
        uid 0 and a group its folder's mount maps, so that the next session can write it."""
        groups = (0, FOLDER_ID) if in_user else (0,)
        if e.st.st_uid != 0 or e.st.st_gid not in groups:
            gid = e.st.st_gid if e.st.st_gid in groups else groups[-1]
            with contextlib.suppress(OSError):
                os.chown(e.name, 0, gid, dir_fd=e.dir_fd, follow_symlinks=False)


def _quota_error(
    tenant: str, user: str, scope: str, kind: str, used: int, limit: int, *, upload: bool = False
) -> QuotaExceeded:
    setting = f"service.{scope}_quota_{'mib' if kind == 'bytes' else 'files'}"
    who = (
        f"the folder of user {user!r}"
        if scope == "user"
        else f"the storage of tenant {tenant!r} (all its users)"
    )
    if kind == "bytes":
        amount, cap = _bytes(used), _bytes(limit)
    else:
        amount, cap = f"{used:,} files and folders", f"{limit:,}"
    verb = "would hold" if upload else "holds"
    message = (
        f"{who} {verb} {amount}, over its quota of {cap} ({setting}): delete files to go on, or ask the "
        f"operator to raise {setting}"
    )
    return QuotaExceeded(message, scope=scope, kind=kind, used=used, limit=limit, setting=setting)


def _bytes(n: int) -> str:
    return f"{n:,} bytes" if n < MiB else f"{n / MiB:,.1f} MiB"
