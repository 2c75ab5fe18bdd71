"""One session's forward proxy: HTTP/1.1 on the Unix socket mounted into the session.

The session's relay (:mod:`thinkbox.sandbox.inside.relay`) hands over each connection as the session's
code made it to ``HTTP_PROXY``: absolute-form requests (``GET http://host/path``) for plain HTTP, and
``CONNECT host:port`` for HTTPS, whose TLS the proxy terminates with a certificate of the installation's
CA (:mod:`.ca`) so that it reads the requests inside. Each request is checked (limits, the tenant's
network policy, the resolved addresses, where its secrets may go), forwarded with ``httpcore`` to the
address that was checked (TLS verified against the system's CAs), its answer scrubbed of secret values,
and recorded. Parsing is ``h11``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import h11
import httpcore

from thinkbox.agent.events import NetworkRequest
from thinkbox.service.egress.artifacts import CACHED, ArtifactCache, Fill, is_package_file
from thinkbox.service.egress.headers import authority, content_length, decoding, head_size, pieces
from thinkbox.service.egress.linger import linger
from thinkbox.service.egress.policy import special_address
from thinkbox.service.egress.swap import Refused
from thinkbox.service.egress.upstream import pool_host

if TYPE_CHECKING:
    from thinkbox.service.egress.manager import Egress, SessionEgress

log = logging.getLogger(__name__)

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
READ = 64 * 1024
SCRUB_WHOLE = 1024 * 1024
"""Answers up to this size (by Content-Length) are scrubbed whole, so they keep a Content-Length."""
MAX_PAGE = 16 * 1024 * 1024
"""How much of a package index's page is read for its links."""
ADMIN_HINT = "an admin of your tenant can allow it with `thinkbox admin network allow TENANT HOST[:PORT]`"


class _Closed(Exception):
    """The session closed the connection, or sent something h11 cannot parse."""


class Connection:
    """One connection from the session: requests one after the other (keep-alive), maybe inside TLS."""

    def __init__(
        self,
        egress: Egress,
        session: SessionEgress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.egress, self.session = egress, session
        self.reader, self.writer = reader, writer

    async def serve(self) -> None:
        self.session.connections.add(self.writer)
        try:
            await self._serve()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, h11.ProtocolError):
            pass
        finally:
            self.session.connections.discard(self.writer)
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _serve(self) -> None:
        conn = h11.Connection(h11.SERVER)
        event = await self._next(conn)
        if isinstance(event, h11.Request) and event.method == b"CONNECT":
            await self._tunnel(conn, event)
            return
        await self._requests(conn, event, scheme="http", origin=None)

    async def _next(self, conn: h11.Connection) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(READ))
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise _Closed
            return cast(h11.Event, event)

    async def _tunnel(self, conn: h11.Connection, request: h11.Request) -> None:
        """CONNECT host:port: answer 200, then TLS with a certificate for host, then its requests (each
        checked like a plain one)."""
        while not isinstance(await self._next(conn), h11.EndOfMessage):
            pass
        host, port = authority(request.target.decode("ascii", "replace"), 443)
        started = time.monotonic()
        if not host:
            await self._send_refusal(conn, 400, "CONNECT needs HOST:PORT", close=True)
            return
        # the policy is checked per request inside: a refusal is then an HTTP 403 whose message the
        # session's code reads, not a failed tunnel whose reason clients drop
        self.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await self.writer.drain()
        try:
            await self.writer.start_tls(self.egress.authority.context_for(host))
        except (ssl.SSLError, OSError) as exc:  # the session's client does not trust the bundle, or left
            reason = (
                f"TLS with the session's client failed ({exc}); HTTPS clients must trust SSL_CERT_FILE "
                "(the installation's CA bundle)"
            )
            self.session.record(_event(host, port, "CONNECT", "", started, reason=reason))
            return
        inner = h11.Connection(h11.SERVER)
        await self._requests(inner, await self._next(inner), scheme="https", origin=(host, port))

    async def _requests(
        self, conn: h11.Connection, event: h11.Event, *, scheme: str, origin: tuple[str, int] | None
    ) -> None:
        while True:
            if not isinstance(event, h11.Request):
                raise _Closed
            keep = await self._exchange(conn, event, scheme, origin)
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            event = await self._next(conn)

    # -- one request ----------------------------------------------------------------------------------
    async def _exchange(
        self, conn: h11.Connection, request: h11.Request, scheme: str, origin: tuple[str, int] | None
    ) -> bool:
        """Check, forward and record one request; False when the connection must close after it."""
        started = time.monotonic()
        method = request.method.decode("ascii", "replace")
        target = request.target
        if origin is None:  # absolute-form: http://host[:port]/path
            url = urllib.parse.urlsplit(target.decode("ascii", "replace"))
            if url.scheme != "http" or not url.hostname:
                reason = "send absolute http:// URLs to the proxy (https goes through CONNECT)"
                await self._drain(conn)
                await self._send_refusal(conn, 400, reason, close=True)
                return False
            host, port = url.hostname, url.port or 80
            target = (url.path or "/").encode() + (b"?" + url.query.encode() if url.query else b"")
        else:
            host, port = origin
        path = target.split(b"?")[0].decode("ascii", "replace")

        def refuse(reason: str, names: list[str] | None = None, up: int = 0) -> NetworkRequest:
            return _event(
                host, port, method, path, started, refused=True, reason=reason, secrets=names or [], up=up
            )

        s = self.session
        limits = self.egress.settings
        length = content_length(request.headers)
        if length is not None and length > limits.max_body_bytes:
            reason = (
                f"the request body ({length:,} bytes) is over the limit of {limits.max_body_bytes:,} bytes"
            )
            s.record(refuse(reason + " (egress.max_body_bytes)"))
            await self._send_refusal(conn, 403, reason + "; send less per request", close=True)
            return False
        body = await self._body(conn, limits.max_body_bytes)
        if body is None:
            reason = f"the request body is over the limit of {limits.max_body_bytes:,} bytes"
            s.record(refuse(reason + " (egress.max_body_bytes)"))
            await self._send_refusal(conn, 403, reason + "; send less per request", close=True)
            return False
        why = s.over_limits(len(body) + head_size(request))  # the headers are bytes sent too
        if why is None:
            why = await s.check_host(host, port)
        if why is not None:
            s.record(refuse(why, up=len(body)))
            await self._send_refusal(conn, 403, why)
            return True
        headers = [(k.lower(), v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        try:
            headers, used = s.secrets.swap(host, port, method, path, target, headers, body)
        except Refused as exc:
            s.record(refuse(exc.reason, exc.secrets, len(body)))
            await self._send_refusal(conn, 403, f"refused: {exc.reason}")
            return True
        keep = self._package_file(scheme, host, port, method, path, target, used)
        if keep is not None and (hit := keep[0].open(keep[1])) is not None:
            return await self._from_cache(conn, request, host, port, path, hit, started)
        try:
            address = await self._address(host, port)
            if scheme == "http":  # a secret in clear text goes only where it stays inside or was meant to
                s.secrets.cleartext(used, host, port, address, target)
        except Refused as exc:
            s.record(refuse(exc.reason, used, len(body)))
            await self._send_refusal(conn, 403, exc.reason)
            return True
        if used:
            self.egress.mark_used(s, used)
        return await self._forward(
            conn,
            request,
            scheme,
            host,
            port,
            address,
            method,
            path,
            target,
            headers,
            body,
            used,
            started,
            keep,
        )

    def _package_file(
        self, scheme: str, host: str, port: int, method: str, path: str, target: bytes, used: list[str]
    ) -> tuple[ArtifactCache, Path] | None:
        """Where the tenant's package cache keeps this answer; None: not a package file (.artifacts)."""
        cache = self.egress.artifacts(self.session.owner.tenant_id)
        if cache is None or not is_package_file(self.session.policy, method, host, port, path, used):
            return None
        return cache, cache.path(scheme, host, port, target)

    async def _from_cache(
        self,
        conn: h11.Connection,
        request: h11.Request,
        host: str,
        port: int,
        path: str,
        hit: tuple[BinaryIO, int],
        started: float,
    ) -> bool:
        s = self.session
        file, size = hit
        with file:
            if (over := s.count_down(size)) is not None:
                s.record(_event(host, port, "GET", path, started, refused=True, reason=over))
                await self._send_refusal(conn, 403, over)
                return True
            scrubber = s.secrets.scrubber() if s.secrets.pairs else None
            headers = [(b"content-type", b"application/octet-stream")]
            if scrubber is None:
                headers.append((b"content-length", str(size).encode()))
            if request.http_version == b"1.0":
                headers.append((b"connection", b"close"))
            self.writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
            while chunk := await asyncio.to_thread(file.read, READ):
                data = scrubber.feed(chunk) if scrubber is not None else chunk
                if data:
                    self.writer.write(conn.send(h11.Data(data=data)))
                    await self.writer.drain()
            tail = scrubber.flush() if scrubber is not None else b""
            if tail:
                self.writer.write(conn.send(h11.Data(data=tail)))
            self.writer.write(conn.send(h11.EndOfMessage()))
            await self.writer.drain()
        s.record(_event(host, port, "GET", path, started, status=200, down=size, reason=CACHED))
        return request.http_version != b"1.0"

    async def _address(self, host: str, port: int) -> str:
        """The address to connect to: every address the name resolves to must be public, unless a rule
        names this host."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Refused(f"{host} does not resolve ({exc.strerror or exc}); check the host name") from None
        addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))  # IPv4 first
        policy = self.session.policy
        for address in addresses:
            if special_address(address) and not policy.private_allowed(host, port, address):
                raise Refused(
                    f"the egress proxy refused {host}:{port}: it resolves to a private, loopback or "
                    f"link-local address ({address}), which sessions reach only when a rule names that "
                    f"address: an admin of your tenant can allow it with "
                    f"`thinkbox admin network allow TENANT {address}`"
                )
        return addresses[0]

    async def _forward(
        self,
        conn: h11.Connection,
        request: h11.Request,
        scheme: str,
        host: str,
        port: int,
        address: str,
        method: str,
        path: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        used: list[str],
        started: float,
        keep: tuple[ArtifactCache, Path] | None = None,
    ) -> bool:
        s = self.session
        scrubbing = bool(s.secrets.pairs)
        page = s.policy.is_index_page(host, port, path)  # its links are learned (Policy.learn_links)
        fill: Fill | None = None
        headers = [h for h in headers if h[0] not in (b"content-length", b"host")]
        default_port = 443 if scheme == "https" else 80
        headers.insert(0, (b"host", (host if port == default_port else f"{host}:{port}").encode()))
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", str(len(body)).encode()))
        if scrubbing or page:  # an encoded answer could hide a value from the scrubber, or links
            headers = [h for h in headers if h[0] != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
        url = httpcore.URL(scheme=scheme, host=pool_host(address, host), port=port, target=target)
        extensions = {"sni_hostname": host, "timeout": self.egress.timeouts}
        status, down, why, recorded = 0, 0, "", False
        try:
            async with self.egress.pool.stream(
                method, url, headers=headers, content=body, extensions=extensions
            ) as response:
                status = response.status
                out_headers = [(k.lower(), v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
                decoder, readable = None, True
                length = content_length(out_headers)
                if keep is not None and status == 200 and decoding(out_headers)[1:] == (None, True):
                    fill = keep[0].fill(keep[1])  # kept as it arrives, before any scrubbing
                links = bytearray() if page and status == 200 else None
                kind = next((v for k, v in out_headers if k == b"content-type"), b"")
                if scrubbing or links is not None:  # decoded: what it decodes to is counted and sent
                    out_headers, decoder, readable = decoding(out_headers)
                if scrubbing or decoder is not None:
                    out_headers = s.secrets.scrub_headers(h for h in out_headers if h[0] != b"content-length")
                whole = scrubbing and decoder is None and length is not None and length <= SCRUB_WHOLE
                """A small answer is scrubbed whole and keeps a Content-Length; a large one is streamed."""
                if not readable:
                    why = "the host answered in a content encoding the proxy cannot read (to check it)"
                    await self._send_refusal(conn, 502, why, close=True)
                    return False
                if request.http_version == b"1.0":
                    out_headers.append((b"connection", b"close"))
                reason = s.secrets.scrub(response.extensions.get("reason_phrase", b""))
                scrubber = s.secrets.scrubber()
                kept: list[bytes] = []
                if not whole:
                    self.writer.write(
                        conn.send(h11.Response(status_code=status, headers=out_headers, reason=reason))
                    )
                async for chunk in response.aiter_stream():
                    down += len(chunk)
                    if fill is not None:
                        fill.write(chunk)
                    for data in pieces(decoder, chunk, READ):  # a small chunk may decode to gigabytes
                        if (over := s.count_down(len(data))) is not None:
                            raise _Cut(over)
                        if links is not None:
                            links += data[: MAX_PAGE - len(links)]
                        if whole:
                            kept.append(data)
                            continue
                        if data := scrubber.feed(data):
                            self.writer.write(conn.send(h11.Data(data=data)))
                            await self.writer.drain()
                if links is not None:
                    s.policy.learn_links(bytes(links), kind)
                tail = s.secrets.scrub(b"".join(kept)) if whole else scrubber.flush()
                # recorded before the answer ends: the session's code, which acts once it has the whole
                # answer, never runs ahead of its request's event (nor loses it to a failure after it)
                s.record(_event(host, port, method, path, started, status=status, up=len(body), down=down,
                                secrets=used))  # fmt: skip
                recorded = True
                if whole:
                    out_headers.append((b"content-length", str(len(tail)).encode()))
                    self.writer.write(
                        conn.send(h11.Response(status_code=status, headers=out_headers, reason=reason))
                    )
                if tail:
                    self.writer.write(conn.send(h11.Data(data=tail)))
                self.writer.write(conn.send(h11.EndOfMessage()))
                await self.writer.drain()
                if fill is not None:
                    done: Fill = fill
                    fill = None
                    done.commit(length)
        except _Cut as cut:
            why = cut.reason
            s.record(
                _event(
                    host,
                    port,
                    method,
                    path,
                    started,
                    status=status,
                    up=len(body),
                    down=down,
                    secrets=used,
                    refused=True,
                    reason=why,
                )
            )
            await self._send_refusal(conn, 403, why, close=True)  # a small answer is cut before it starts
            return False
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            why = s.secrets.scrub(why.encode()).decode(errors="replace")  # h11 quotes bad answer lines
            if recorded:  # the answer was whole; closing the upstream connection failed
                log.warning("closing the connection to %s:%s failed after its answer: %s", host, port, why)
                return False
            s.record(
                _event(
                    host,
                    port,
                    method,
                    path,
                    started,
                    status=0,
                    up=len(body),
                    down=down,
                    secrets=used,
                    reason=why,
                )
            )
            if status == 0 and conn.our_state is h11.SEND_RESPONSE:
                code = 504 if isinstance(exc, httpcore.TimeoutException) else 502
                await self._send_refusal(
                    conn, code, f"the proxy could not reach {host}:{port}: {why}", close=True
                )
            return False
        finally:
            if fill is not None:  # the answer did not arrive whole: keep nothing
                fill.abort()
        return True

    # -- helpers ------------------------------------------------------------------------------------
    async def _body(self, conn: h11.Connection, limit: int) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next(conn)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    return None
                parts.append(bytes(event.data))

    async def _drain(self, conn: h11.Connection) -> None:
        with contextlib.suppress(_Closed, h11.ProtocolError):
            while not isinstance(await self._next(conn), h11.EndOfMessage):
                pass

    async def _send_refusal(
        self, conn: h11.Connection, status: int, message: str, *, close: bool = False
    ) -> None:
        body = (message.rstrip() + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        if conn.our_state is not h11.SEND_RESPONSE:
            return
        self.writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        self.writer.write(conn.send(h11.Data(data=body)))
        self.writer.write(conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        if close:  # the client may still be writing (a refused body): it must read this first (.linger)
            await linger(self.reader, self.writer)


class _Cut(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _event(
    host: str,
    port: int,
    method: str,
    path: str,
    started: float,
    *,
    status: int = 0,
    up: int = 0,
    down: int = 0,
    secrets: list[str] | None = None,
    refused: bool = False,
    reason: str = "",
) -> NetworkRequest:
    return NetworkRequest(
        host=host,
        port=port,
        method=method,
        path=path[:2000],
        status=status,
        bytes_up=up,
        bytes_down=down,
        secrets=secrets or [],
        refused=refused,
        reason=reason,
        duration_ms=round((time.monotonic() - started) * 1000, 2),
    )
