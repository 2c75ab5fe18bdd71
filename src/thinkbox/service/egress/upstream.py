"""The proxy's connections to upstream hosts: one pool for every session, each connection kept for the
address the proxy checked *and* the name its TLS verified.

httpcore reuses an open connection for any request of the same scheme, URL host and port, and verifies
the server's certificate only when it connects. The proxy connects to the address it checked (never to
what a name resolves to later), so if the URL host were that address alone, a connection verified for
``a.example`` would carry a request for ``b.example`` whenever both names resolve to one address: on a
shared ingress that routes TLS by name, that request (with the secret the proxy put into it) would reach
``a.example``'s server, which may be another tenant's. So the URL host names both (:func:`pool_host`), and
:class:`PinnedBackend` connects to the address part.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore

_SEPARATOR = "|"
"""Between the address and the name in a pool host (no address holds it)."""


def pool_host(address: str, host: str) -> str:
    """The URL host under which a connection to ``address`` for the name ``host`` is kept and found again."""
    return f"{address}{_SEPARATOR}{host.encode('ascii', 'backslashreplace').decode('ascii')}"


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address of a :func:`pool_host`, nothing else."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address, separator, _ = host.partition(_SEPARATOR)
        if not separator:  # every request of the proxy names its checked address
            raise httpcore.ConnectError(f"no checked address in the upstream host {host!r}")
        return await self._backend.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the egress proxy reaches upstream hosts over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
