"""The tenant's package cache in the egress proxy (``thinkbox.service.egress.artifacts``): a package file
fetched by one user is served to the tenant's other users from the host's disk, never to another tenant,
and an answer that did not arrive whole is not kept.

A real local "package index" on 127.0.0.1 (configured as the sessions' index, so the policy allows it)
counts what it serves; sessions are real zygote sessions going out through their real proxies."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from thinkbox.sandbox.types import SessionConfig
from thinkbox.service import accounts
from thinkbox.service.accounts import Principal
from thinkbox.service.egress.artifacts import CACHED, ArtifactCache

from .egress_support import World, world

WHEEL = bytes(range(256)) * 2000  # 512 000 bytes
GET = """
import hashlib, urllib.request
data = urllib.request.urlopen({url!r}, timeout=60).read()
print(len(data), hashlib.sha256(data).hexdigest())
"""


class _Index(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: dict[str, int]

    def do_GET(self) -> None:
        self.served[self.path] = self.served.get(self.path, 0) + 1
        body = WHEEL
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "no-store")
        if self.path.endswith("-cut.whl"):  # announces more than it sends, then closes
            self.send_header("Content-Length", str(len(body) * 2))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _index() -> Iterator[tuple[str, dict[str, int]]]:
    served: dict[str, int] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Index", (_Index,), {"served": served}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def _fetch(w: World, owner: Principal, session_id: str, url: str) -> str:
    config = await w.egress.session_config(session_id, owner, SessionConfig())
    session = await w.backend.create_session(config)
    try:
        result = await session.execute(GET.format(url=url), timeout=120)
    finally:
        await session.close()
        await w.egress.detach(session_id)
    return result.stdout.strip() if result.ok else f"failed: {result.error} {result.stderr[-300:]}"


async def test_a_package_file_is_fetched_once_per_tenant_and_not_kept_when_cut(tmp_path: Path) -> None:
    whole = f"{len(WHEEL)} {hashlib.sha256(WHEEL).hexdigest()}"
    with _index() as (base, served):
        async with world(tmp_path, index_url=f"{base}/simple/") as (w, _):
            bob_user = accounts.create_user(w.db, "acme", "bob")
            bob = dataclasses.replace(w.owner, user_id=bob_user.id, user_name="bob")
            other = accounts.create_tenant(w.db, "globex")
            carol = accounts.create_user(w.db, "globex", "carol")
            stranger = Principal(
                tenant_id=other.id, tenant_name="globex", user_id=carol.id, user_name="carol", key_id=""
            )
            url = f"{base}/files/tool-1.0-py3-none-any.whl"
            first = await _fetch(w, w.owner, "s_0000000000000001", url)
            second = await _fetch(w, bob, "s_0000000000000002", url)
            elsewhere = await _fetch(w, stranger, "s_0000000000000003", url)
            cut_url = f"{base}/files/tool-1.0-cut.whl"
            cut = [await _fetch(w, w.owner, f"s_000000000000001{i}", cut_url) for i in range(2)]
            page_url = f"{base}/simple/tool/"
            page = [await _fetch(w, w.owner, f"s_000000000000002{i}", page_url) for i in range(2)]
    assert first == second == elsewhere == whole
    # alice downloaded it, bob of the same tenant got it from the cache, globex downloaded it again
    assert served["/files/tool-1.0-py3-none-any.whl"] == 2, served
    by_session = {sid: e for sid, e in w.events if e.path.endswith("none-any.whl")}
    assert by_session["s_0000000000000002"].reason == CACHED
    assert by_session["s_0000000000000002"].bytes_down == len(WHEEL)
    assert by_session["s_0000000000000001"].reason == by_session["s_0000000000000003"].reason == ""
    # an answer cut short is never kept: both tries went to the index, and both failed
    assert served["/files/tool-1.0-cut.whl"] == 2, served
    assert all(c.startswith("failed") for c in cut), cut
    # an index page is not a package file: never answered from the cache
    assert served["/simple/tool/"] == 2 and page[0] == page[1] == whole


def test_the_cache_keeps_only_whole_files_and_trims_the_least_recently_used(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "files", max_bytes=250)
    paths = [cache.path("https", "files.example", 443, f"/p/{i}.whl".encode()) for i in range(3)]
    assert len(set(paths)) == 3 and all(p.parent == tmp_path / "files" for p in paths)
    for i, path in enumerate(paths):
        if i == 2:  # #1 was last used long ago, #0 is used now: #1 is the least recently used
            os.utime(paths[1], (1, 1))
            hit = cache.open(paths[0])
            assert hit is not None
            hit[0].close()
        fill = cache.fill(path)
        assert fill is not None
        fill.write(bytes([i]) * 100)
        fill.commit(100)
    assert not paths[1].exists() and paths[0].exists() and paths[2].exists()
    short = cache.fill(paths[1])
    assert short is not None
    short.write(b"x" * 10)
    short.commit(100)  # announced 100 bytes, got 10
    assert cache.open(paths[1]) is None
    assert not list((tmp_path / "files").glob("*.part")), "nothing half-written is left"
