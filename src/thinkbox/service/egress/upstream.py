"""The proxy's connections to upstream hosts: pooled per (host name, checked address).

The proxy resolves a host name itself and checks every address (:mod:`.policy`), then connects to the
address it checked, speaking TLS for the name. httpcore's pool keeps a connection per URL origin, so with
the address as the URL's host two names at one address (a CDN, a shared server, ``localhost`` and
``127.0.0.1``) would share a TLS connection verified for the first name only. Here the URL's host is
:func:`key` (the name and the address), and :class:`Pinned` connects to the address in it: a connection
serves only requests for the name its TLS was verified for, at the address that was checked.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore

SOCKET_OPTION = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


def key(name: str, address: str) -> str:
    """The URL host of a request for ``name`` sent to ``address`` (a host name has no ``@``)."""
    return f"{name}@{address}"


class Pinned(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting to the address of :func:`key`."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = host.rpartition("@")[2]
        return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the egress proxy connects to hosts, not to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
