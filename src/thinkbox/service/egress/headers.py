"""Parsing helpers of the egress proxy: authorities, sizes, content encodings."""

from __future__ import annotations

import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import h11
import httpcore


def authority(text: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit("//" + text)
    try:
        port = parts.port or default_port
    except ValueError:
        return "", 0
    return (parts.hostname or "").lower(), port


def head_size(request: h11.Request) -> int:
    """The bytes of a request's line and headers as the session sent them (near enough: h11 strips the
    spaces around values), which count toward egress.max_bytes like its body: a session could otherwise
    move up to h11's 16 KiB of headers per request past the limit."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items()) + 2


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


def decoding(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], Any, bool]:
    """The headers without Content-Encoding, a decoder for the body (None: none needed), and False when
    the encoding is one this proxy cannot decode (the body could not be checked for secrets)."""
    codings = [  # every Content-Encoding header, each a list: an answer may be encoded more than once
        coding.strip().lower()
        for name, value in headers
        if name == b"content-encoding"
        for coding in value.split(b",")
    ]
    codings = [c for c in codings if c not in (b"", b"identity")]
    if not codings:
        return headers, None, True
    encoding = codings[0] if len(codings) == 1 else b"more than one"
    rest = [h for h in headers if h[0] != b"content-encoding"]
    if encoding in (b"gzip", b"x-gzip"):
        return rest, zlib.decompressobj(16 + zlib.MAX_WBITS), True
    if encoding == b"deflate":
        return rest, zlib.decompressobj(), True
    return headers, None, False


def pieces(decoder: Any, chunk: bytes, size: int) -> Iterator[bytes]:
    """``chunk`` decoded (``decoder`` None: as it is) in pieces of at most ``size`` bytes, so that a small
    compressed chunk that decodes to gigabytes is never held whole."""
    if decoder is None:
        yield chunk
        return
    try:
        data = decoder.decompress(chunk, size)
        while data:
            yield data
            if not decoder.unconsumed_tail and len(data) < size:
                return
            data = decoder.decompress(decoder.unconsumed_tail, size)
    except zlib.error as exc:  # told like any other broken answer
        raise httpcore.RemoteProtocolError(f"the host's compressed answer does not decode ({exc})") from None
