"""The tenant's package cache in the egress proxy: a package file fetched once is served from disk after.

pip's own HTTP cache (``PIP_CACHE_DIR``, each user's own: see :mod:`.manager`) keeps a download only when
the index's answer allows caching; an index or mirror that answers ``no-store`` leaves it empty, and every
user of the tenant would download every package again. Package files are immutable (a release's file never
changes; the index's links carry its hash, which pip checks), so the proxy keeps them itself: a ``GET``
of a package file (``.whl``, ``.tar.gz``, ``.zip``...) from the package index or a host its pages link
to, sending no secret, is answered from ``<egress>/package-files/<tenant id>/`` when that URL was fetched
before; otherwise the answer is forwarded as usual and a complete 200 without a content encoding is
kept. The folder is on the host only, never mounted into a session, so no session can change what
another one is served. Files are written to a temporary name and renamed when whole; the least recently
used go when the folder passes ``egress.package_cache_mb``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from thinkbox.service.egress.policy import Policy

CACHED = "served from the tenant's package cache"
"""The reason recorded for a request answered from the cache."""
PACKAGE_FILE = re.compile(r"\.(whl|tar\.gz|tgz|tar\.bz2|zip)$", re.IGNORECASE)


def is_package_file(policy: Policy, method: str, host: str, port: int, path: str, used: list[str]) -> bool:
    """A GET of a package file from the package index or a host its pages link to, sending no secret."""
    if method != "GET" or used or not PACKAGE_FILE.search(path):
        return False
    return policy.is_index(host, port) or host.lower() in policy.learned


class ArtifactCache:
    """One tenant's package files, by URL."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path(self, scheme: str, host: str, port: int, target: bytes) -> Path:
        url = f"{scheme}://{host.lower()}:{port}".encode() + target
        return self.folder / hashlib.sha256(url).hexdigest()

    def open(self, path: Path) -> tuple[BinaryIO, int] | None:
        """The kept file and its size, marked as recently used; None when it is not kept."""
        try:
            f = path.open("rb")
        except OSError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return f, os.fstat(f.fileno()).st_size

    def fill(self, path: Path) -> Fill | None:
        """A file to write the answer into while it is forwarded; None when none can be made."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".part")
        except OSError:
            return None
        return Fill(self, path, Path(tmp), os.fdopen(fd, "wb"))

    def trim(self) -> None:
        """Remove the least recently used files while the folder is over its size."""
        try:
            files = [(p.stat(), p) for p in self.folder.iterdir() if not p.name.endswith(".part")]
        except OSError:
            return
        total = sum(st.st_size for st, _ in files)
        for st, p in sorted(files, key=lambda f: f[0].st_mtime):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= st.st_size


class Fill:
    """An answer being kept: written as it streams, renamed into place only when it arrived whole."""

    def __init__(self, cache: ArtifactCache, path: Path, tmp: Path, file: BinaryIO) -> None:
        self.cache, self.path, self.tmp, self.file = cache, path, tmp, file
        self.size = 0
        self.failed = False

    def write(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.file.write(data)
            self.size += len(data)
        except OSError:
            self.failed = True

    def commit(self, expected: int | None) -> None:
        """Keep the file when nothing failed and it has the announced length (when one was announced)."""
        whole = not self.failed and (expected is None or expected == self.size)
        try:
            self.file.close()
            if whole:
                os.replace(self.tmp, self.path)
                self.cache.trim()
                return
        except OSError:
            pass
        self.abort()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
