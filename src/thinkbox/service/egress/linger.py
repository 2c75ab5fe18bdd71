"""Closing a connection that the proxy has answered while its client may still be writing to it.

A refusal that ends the connection (a body over egress.max_body_bytes, known from its Content-Length
before the body arrives; a connection past egress.max_connections, answered before its request is read)
goes out while the client can still be sending. Closed at once, the connection fails the client's next
write (EPIPE), and a Unix socket closed with bytes unread fails the peer's next read (ECONNRESET): the
session's relay then drops the answer it holds, and the session's code sees the connection cut, not why.
So the close is made in stages, as RFC 9112 (section 9.6) asks of a server that closes: the proxy ends its
side (the client reads to the answer's end), then reads and discards what the client still sends until the
client closes, :data:`LINGER_S` at most, and only then closes.
"""

from __future__ import annotations

import asyncio
import contextlib

LINGER_S = 5.0
"""How long a refused connection is read from after its answer, at most (a client that behaves closes
as soon as it has read the answer)."""


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """End the proxy's side of ``writer`` once what it holds is sent (TLS cannot: its close ends both
    sides), then read ``reader`` until the client closes, :data:`LINGER_S` at most; the caller closes."""
    with contextlib.suppress(OSError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(1 << 16):
                pass
