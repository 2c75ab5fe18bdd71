"""The egress proxy of the service's sessions: one listener per session, its mounts and environment.

:meth:`Egress.session_config` gives a session its way out before it starts: a host folder with the
proxy's Unix socket and the CA bundle, mounted read-only at ``/workspace/.egress``; the environment that
points HTTP clients at the in-sandbox relay (``HTTP_PROXY`` and friends), trusts the bundle
(``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``PIP_CERT``, ``NODE_EXTRA_CA_CERTS``) and holds one
placeholder per secret the user may use; and the package folders: the user's installed packages
(``/workspace/.packages``, read-write, on ``sys.path`` from the start, where ``pip install`` puts them)
and the user's pip cache (``/workspace/.pip-cache``). :meth:`Egress.detach` closes it all.

The pip cache is the user's own, never the tenant's: pip installs what its cache holds as it is (a wheel
it once built from a source archive is not checked again), so a cache that the code of the tenant's other
users could write would let them choose what this user's ``pip install`` runs. What users of a tenant
share is the proxy's package cache (:mod:`.artifacts`), which no session can write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpcore

from thinkbox.agent.events import NetworkRequest
from thinkbox.config import EgressSettings, Settings
from thinkbox.sandbox.inside.relay import ENV_SOCKET, PORT
from thinkbox.sandbox.types import WORKSPACE, Mount, SessionConfig
from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.egress import rules
from thinkbox.service.egress.artifacts import ArtifactCache
from thinkbox.service.egress.ca import Authority
from thinkbox.service.egress.linger import linger
from thinkbox.service.egress.policy import Policy, index_pages, index_urls
from thinkbox.service.egress.proxy import ADMIN_HINT, Connection
from thinkbox.service.egress.swap import SessionSecrets
from thinkbox.service.egress.upstream import PinnedBackend
from thinkbox.service.secrets.grant import GrantSource

log = logging.getLogger(__name__)
RULES_TTL_S = 5.0
"""How long a tenant's rules and a user's secrets are kept before they are read again (a change shows up
within it)."""
KEPT_RECORDS = 1000
MOUNT = f"{WORKSPACE}/.egress"
PACKAGES = f"{WORKSPACE}/.packages"
PIP_CACHE = f"{WORKSPACE}/.pip-cache"
SITE = f"{PACKAGES}/site"
Listener = Callable[[str, NetworkRequest], None]


@dataclass
class SessionEgress:
    """One session's proxy: its listener, policy, secrets, counters and records."""

    id: str
    owner: Principal
    folder: Path
    policy: Policy
    secrets: SessionSecrets
    egress: Egress
    server: asyncio.AbstractServer | None = None
    requests: int = 0
    transferred: int = 0
    step: int = 0
    records: collections.deque[NetworkRequest] = field(
        default_factory=lambda: collections.deque(maxlen=KEPT_RECORDS)
    )
    rules_read: float = 0.0
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    def over_limits(self, size: int) -> str | None:
        """Why one more request of ``size`` bytes (its line, headers and body) is refused
        (egress.max_requests, egress.max_bytes)."""
        limits = self.egress.settings
        if self.requests >= limits.max_requests:
            return (
                f"this run already made {self.requests} requests, the most allowed (egress.max_requests); "
                "make fewer requests, e.g. fetch in bulk"
            )
        if self.transferred + size > limits.max_bytes:
            return f"this run already moved {self.transferred:,} bytes, the most allowed (egress.max_bytes)"
        self.requests += 1
        self.transferred += size
        return None

    def count_down(self, size: int) -> str | None:
        self.transferred += size
        limit = self.egress.settings.max_bytes
        if self.transferred > limit:
            return f"the transfer went past {limit:,} bytes for this run (egress.max_bytes)"
        return None

    async def check_host(self, host: str, port: int) -> str | None:
        await self.egress.refresh_rules(self)
        why = self.policy.decide(host, port)
        if why is None:
            return None
        return (
            f"the egress proxy refused {host}:{port}: {why}. Sessions reach only the hosts of their "
            f"tenant's network policy; {ADMIN_HINT}"
        )

    def record(self, event: NetworkRequest) -> None:
        event.step = self.step
        self.records.append(event)
        if self.egress.listener is not None:
            try:
                self.egress.listener(self.id, event)
            except Exception:
                log.exception("recording a network request of session %s failed", self.id)


class Egress:
    """The proxies of every session of the service (``grants``: the secret store, None for no secrets)."""

    def __init__(self, settings: Settings, db: Database | None, grants: GrantSource | None = None) -> None:
        self.settings: EgressSettings = settings.egress
        self.db = db
        self.grants = grants
        # resolved once: the package folders are mounts that grant ownership, whose sources are opened
        # without following any symlink (a data dir linked to another disk is a symlink)
        self.root = settings.data_dir.resolve() / "egress"
        # the sessions' proxies (which put their users' secrets into requests), packages and pip caches:
        # each session gets binds of its own folders, other users of the host nothing
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.authority = Authority(self.root / "ca")
        self.bundle = self.authority.write_bundle(self.root / "trust" / "ca-bundle.pem")
        shutil.rmtree(self.root / "sessions", ignore_errors=True)  # sockets of a process that ended
        shutil.rmtree(self.root / "pip-cache", ignore_errors=True)  # tenant-wide caches of earlier versions
        self.index_urls = index_urls(self.settings.index_url)
        self.index_pages = index_pages(self.index_urls)
        ctx = ssl.create_default_context()
        if self.settings.extra_ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.settings.extra_ca_file))
        self.pool = httpcore.AsyncConnectionPool(  # no cap shared by all: one session could take it all
            ssl_context=ctx,
            max_connections=None,
            max_keepalive_connections=256,
            keepalive_expiry=30,
            network_backend=PinnedBackend(),
        )
        """Upstream connections of every session, each kept for one address and name (:mod:`.upstream`)."""
        self.timeouts = {
            "connect": self.settings.connect_timeout_s,
            "read": self.settings.read_timeout_s,
            "write": self.settings.read_timeout_s,
            "pool": self.settings.connect_timeout_s,
        }
        self.listener: Listener | None = None
        """Told every request of every session (the service journals it as an event of the run)."""
        self._sessions: dict[str, SessionEgress] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.privileged = os.geteuid() == 0

    # -- a session's way out --------------------------------------------------------------------------
    async def session_config(self, session_id: str, owner: Principal, config: SessionConfig) -> SessionConfig:
        """``config`` plus the proxy of session ``session_id`` (listening from now on), its mounts and
        environment (see the module docstring)."""
        await self.detach(session_id)
        grants = await self.grants.grants(owner.tenant_id, owner.user_id) if self.grants is not None else []
        secrets = SessionSecrets(grants)
        folder = self.root / "sessions" / session_id
        session = SessionEgress(session_id, owner, folder, self._policy(), secrets, self)
        await self.refresh_rules(session, force=True)
        packages, cache = await asyncio.to_thread(self._prepare, session)
        session.server = await self._listen(session)
        self._sessions[session_id] = session
        owner_ids = (0, 0) if self.privileged else (os.geteuid(), os.getegid())
        mounts = (
            *config.mounts,
            Mount(source=folder, target=MOUNT, read_only=True),
            Mount(source=packages, target=PACKAGES, read_only=False, owner=owner_ids),
            Mount(source=cache, target=PIP_CACHE, read_only=False, owner=owner_ids),
        )
        env = {**secrets.env(), **config.env, **self.environment(config.env.get("PYTHONPATH"))}
        return config.model_copy(update={"mounts": mounts, "env": env})

    def environment(self, pythonpath: str | None) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{PORT}"
        bundle = f"{MOUNT}/ca-bundle.pem"
        env = {
            ENV_SOCKET: f"{MOUNT}/proxy.sock",
            **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), proxy),
            **dict.fromkeys(
                ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS"), bundle
            ),
            "CURL_CA_BUNDLE": bundle,
            "NODE_USE_ENV_PROXY": "1",
            "PYTHONPATH": ":".join(p for p in (SITE, pythonpath) if p),
            # ``pip`` and ``python`` in a shell are the session's interpreter's, so ``!pip install`` puts
            # packages where this interpreter imports them from
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "PIP_TARGET": SITE,
            "PIP_CACHE_DIR": PIP_CACHE,
            "PIP_RETRIES": "1",
            "PIP_TIMEOUT": str(self.settings.pip_timeout_s),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_ROOT_USER_ACTION": "ignore",
            "PIP_PROGRESS_BAR": "off",
        }
        if self.index_urls:
            env["PIP_INDEX_URL"] = self.index_urls[0]
        if len(self.index_urls) > 1:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(self.index_urls[1:])
        return env

    def _prepare(self, session: SessionEgress) -> tuple[Path, Path]:
        """The session's folder (socket, CA bundle), the user's package folder and pip cache."""
        shutil.rmtree(session.folder, ignore_errors=True)
        session.folder.mkdir(mode=0o755, parents=True)
        os.chmod(session.folder, 0o755)
        bundle = session.folder / "ca-bundle.pem"
        try:
            os.link(self.bundle, bundle)
        except OSError:
            shutil.copyfile(self.bundle, bundle)
        tenant, user = session.owner.tenant_name, session.owner.user_name
        packages = self.root / "packages" / tenant / user
        cache = self.root / "pip-caches" / tenant / user
        for folder in (packages / "site", cache):
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        return packages, cache

    async def _listen(self, session: SessionEgress) -> asyncio.AbstractServer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = os.open(session.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:  # through the folder's fd: a socket path is limited to 108 bytes, DATA_DIR is not
            sock.bind(f"/proc/self/fd/{fd}/proxy.sock")
            os.chmod("proxy.sock", 0o666, dir_fd=fd)
        finally:
            os.close(fd)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(session.connections) >= self.settings.max_connections:
                await _refuse_busy(reader, writer, self.settings.max_connections)
                return
            await Connection(self, session, reader, writer).serve()

        return await asyncio.start_unix_server(handle, sock=sock, limit=1 << 20)

    async def detach(self, session_id: str) -> None:
        """Close the session's proxy and remove its folder (its records go with it)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        if session.server is not None:
            session.server.close()
            for writer in list(session.connections):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.server.wait_closed(), 5)
        await asyncio.to_thread(shutil.rmtree, session.folder, True)

    async def aclose(self) -> None:
        for session_id in list(self._sessions):
            await self.detach(session_id)
        await self.pool.aclose()

    # -- runs, records ---------------------------------------------------------------------------------
    def begin_run(self, session_id: str) -> None:
        """A run starts on the session: its limits count from zero."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.requests = session.transferred = session.step = 0

    def set_step(self, session_id: str, step: int) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.step = step

    def records(self, session_id: str) -> list[NetworkRequest]:
        session = self._sessions.get(session_id)
        return list(session.records) if session is not None else []

    def artifacts(self, tenant_id: str) -> ArtifactCache | None:
        """The tenant's package cache (:mod:`.artifacts`); None when egress.package_cache_mb is 0."""
        size = self.settings.package_cache_mb * 1024 * 1024
        return ArtifactCache(self.root / "package-files" / tenant_id, size) if size else None

    def session(self, session_id: str) -> SessionEgress | None:
        return self._sessions.get(session_id)

    def _policy(self) -> Policy:
        return Policy(index=[p for p, _ in self.index_pages], index_pages=list(self.index_pages))

    async def refresh_rules(self, session: SessionEgress, *, force: bool = False) -> None:
        """Read the tenant's network rules again, and the user's secrets (a secret deleted or narrowed
        while the session lives is sent no more), at most every few seconds."""
        if not force and time.monotonic() - session.rules_read < RULES_TTL_S:
            return
        if self.db is not None:
            allow, deny = await asyncio.to_thread(rules.patterns, self.db, session.owner.tenant_id)
            session.policy.allow, session.policy.deny = allow, deny
        if self.grants is not None and not force:  # forced at the start, with the secrets just read
            owner = session.owner
            session.secrets.update(await self.grants.grants(owner.tenant_id, owner.user_id))
        session.rules_read = time.monotonic()

    def mark_used(self, session: SessionEgress, names: list[str]) -> None:
        if self.grants is None:
            return
        task = asyncio.create_task(self._mark_used(session.owner, names))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_used(self, owner: Principal, names: list[str]) -> None:
        assert self.grants is not None
        try:
            await self.grants.mark_used(owner.tenant_id, owner.user_id, names)
        except Exception:
            log.exception("marking secrets %s as used failed", names)


async def _refuse_busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> None:
    """Answer a connection past egress.max_connections with :func:`_busy`, then close it in stages
    (:func:`.linger.linger`): a client whose request is still being written when the socket closes gets
    EPIPE and never reads the answer that says why. It counts toward no limit meanwhile."""
    writer.write(_busy(limit))
    with contextlib.suppress(OSError):
        await writer.drain()
        await linger(reader, writer)
    writer.close()


def _busy(limit: int) -> bytes:
    """The answer to a connection past egress.max_connections (sent before its request is read)."""
    body = (
        f"this session already holds {limit} connections to its egress proxy, the most allowed "
        "(egress.max_connections); close some, or make fewer requests at once\n"
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
