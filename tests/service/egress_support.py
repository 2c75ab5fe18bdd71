"""Real parts for the egress tests: an HTTP(S) API on 127.0.0.1 that wants a bearer token and echoes what
it received, an in-memory secret source, a session that goes out through a real proxy, and a client that
speaks to a proxy's socket from the host side as a session's relay would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from thinkbox.agent.events import NetworkRequest
from thinkbox.config import Settings
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import SessionConfig
from thinkbox.service import accounts
from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.egress import Egress, rules
from thinkbox.service.egress.ca import Authority
from thinkbox.service.secrets.grant import FixedGrants, SecretGrant


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token = ""
    received: list[dict[str, str]]

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.received.append({**headers, "path": self.path})
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            data = b'{"error": "unauthorized"}'
            self.send_response(401)
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
                **leaks(self.token),
            }
            data = json.dumps(echo).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class EchoServer:
    """An API on 127.0.0.1 that answers 200 with what it received (headers, body) to ``Bearer token``."""

    token: str
    tls: ssl.SSLContext | None = None
    port: int = 0
    received: list[dict[str, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self) -> Iterator[EchoServer]:
        handler = type("Echo", (_Echo,), {"token": self.token, "received": self.received})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)

    def leaks(self) -> dict[str, str]:
        return leaks(self.token)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


def leaks(token: str) -> dict[str, str]:
    """What the API echoes besides the request: its token in base64 and in hex (the scrubber's job)."""
    return {"token_b64": base64.b64encode(token.encode()).decode(), "token_hex": token.encode().hex()}


def upstream_ca(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A test CA's server context for 127.0.0.1 and the CA's certificate file (to trust upstream)."""
    authority = Authority(folder)
    return authority.context_for("127.0.0.1"), authority.cert_file


@dataclass
class World:
    """A tenant and user in a real database, the egress of their sessions and a sandbox backend."""

    db: Database
    egress: Egress
    backend: SandboxBackend
    owner: Principal
    events: list[tuple[str, NetworkRequest]]

    @contextlib.asynccontextmanager
    async def session(
        self, session_id: str = "s_0000000000000001", owner: Principal | None = None
    ) -> AsyncIterator[Session]:
        config = await self.egress.session_config(session_id, owner or self.owner, SessionConfig())
        session = await self.backend.create_session(config)
        try:
            yield session
        finally:
            await session.close()
            await self.egress.detach(session_id)

    def user(self, name: str) -> Principal:
        """Another user of the owner's tenant."""
        user = accounts.create_user(self.db, self.owner.tenant_name, name)
        return Principal(self.owner.tenant_id, self.owner.tenant_name, user.id, name, key_id="")

    def allow(self, host: str, action: str = "allow") -> None:
        rules.set_rule(self.db, self.owner.tenant_name, host, action)


@contextlib.asynccontextmanager
async def world(
    tmp: Path, grants: list[SecretGrant] | None = None, **egress: object
) -> AsyncIterator[tuple[World, FixedGrants]]:
    settings = Settings(data_dir=tmp / "data", egress=egress)
    db = Database.open(f"sqlite:///{tmp / 'egress.db'}")
    tenant = accounts.create_tenant(db, "acme")
    user = accounts.create_user(db, "acme", "alice")
    owner = Principal(tenant_id=tenant.id, tenant_name="acme", user_id=user.id, user_name="alice", key_id="")
    source = FixedGrants(grants or [])
    proxy = await asyncio.to_thread(Egress, settings, db, source)
    events: list[tuple[str, NetworkRequest]] = []
    proxy.listener = lambda sid, event: events.append((sid, event))
    backend = registry.create_backend("zygote")
    await backend.start()
    try:
        yield World(db, proxy, backend, owner, events), source
    finally:
        await backend.aclose()
        await proxy.aclose()
        db.dispose()


# -- a client of the proxy's socket ------------------------------------------------------------------
@dataclass
class ProxyAnswer:
    """What a client read back through the proxy (``complete``: the whole body arrived)."""

    status: int
    reason: str
    body: bytes
    complete: bool
    headers: list[tuple[str, str]] = field(default_factory=list)


def api_grant(value: str, **rules: object) -> SecretGrant:
    """API_KEY for 127.0.0.1 (any port), sent as a bearer token."""
    return SecretGrant(
        name="API_KEY", value=value, hosts=("127.0.0.1",), header="Authorization: Bearer {secret}", **rules
    )  # type: ignore[arg-type]


async def proxy_socket(w: World, session_id: str) -> tuple[Path, str]:
    """The proxy's socket of a fresh session (no sandbox behind it: the test is the session's relay), and
    the session's placeholder of API_KEY (if it has that secret)."""
    config = await w.egress.session_config(session_id, w.owner, SessionConfig())
    session = w.egress.session(session_id)
    assert session is not None
    return session.folder / "proxy.sock", config.env.get("API_KEY", "")


def connect(sock: Path) -> socket.socket:
    """A client socket connected to the proxy's socket ``sock`` (60 s timeout), as the session's relay is."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(60)
    folder = os.open(sock.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:  # through the folder's fd: a socket path is limited to 108 bytes, pytest's folders are not
        raw.connect(f"/proc/self/fd/{folder}/{sock.name}")
    except OSError:
        raw.close()
        raise
    finally:
        os.close(folder)
    return raw


def ask(
    sock: Path,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    tunnel: str | None = None,
    ca: Path | None = None,
) -> ProxyAnswer:
    """One request through the proxy: absolute-form for http://, CONNECT then TLS when ``tunnel``."""
    raw = connect(sock)
    stream: socket.socket = raw
    target = url
    if tunnel is not None:
        raw.sendall(f"CONNECT {tunnel} HTTP/1.1\r\nHost: {tunnel}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += raw.recv(1)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context(cafile=str(ca))
        stream = context.wrap_socket(raw, server_hostname=tunnel.rsplit(":", 1)[0])
        target = "/" + url.split("/", 3)[3]
    conn = http.client.HTTPConnection("proxy")
    conn.sock = stream
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        try:
            body, complete = response.read(), True
        except http.client.IncompleteRead as cut:
            body, complete = cut.partial, False
        return ProxyAnswer(response.status, response.reason, body, complete, response.getheaders())
    finally:
        conn.close()


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """``handler`` served on 127.0.0.1 (with TLS when given): its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
