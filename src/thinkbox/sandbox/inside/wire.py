"""Framing of docs/protocol.md: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

Used on both sides: the kernel inside the sandbox (blocking sockets, stdlib only) and the host session
(asyncio streams). Keep this module free of third-party imports: it is loaded inside the sandbox.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

PROTOCOL_VERSION = 2
MAX_FRAME = 96 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent something that is not a frame of docs/protocol.md."""


def encode(msg: dict[str, Any]) -> bytes:
    payload = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(payload) > MAX_FRAME:
        raise FrameError(f"message of {len(payload)} bytes exceeds the frame limit of {MAX_FRAME}")
    return _HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(msg, dict) or "type" not in msg:
        raise FrameError("frame is not a JSON object with a 'type'")
    return msg


def header_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
    return int(length)


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Blocking read of exactly ``n`` bytes; None on a clean end of stream before the first byte."""
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise FrameError("connection closed in the middle of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    header = recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    payload = recv_exact(sock, header_length(header))
    if payload is None:
        raise FrameError("connection closed after a frame header")
    return decode(payload)
