"""Reading an interpreter's frames under the host's limits (docs/protocol.md, "Limits").

Everything that comes from the interpreter is untrusted: the user's code runs in that process and can
write anything to its socket. The in-sandbox output pump enforces ``Limits.output_bytes`` politely, but
the host relies on nothing it says: :class:`Output` counts stream text and display data itself,
:func:`reply_error` and the caps below bound every text field of a reply, and :class:`FrameReader` never
buffers a frame larger than the current request may legitimately produce.
"""

from __future__ import annotations

import asyncio
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from thinkbox.sandbox.inside import wire
from thinkbox.sandbox.types import (
    DisplayData,
    ExecutionError,
    Limits,
    OutputChunk,
)

_MiB = 1024 * 1024
CHUNK = 1 * _MiB  # frames are read in pieces of this size; also the StreamReader's buffer limit
FRAME_SLACK = 1 * _MiB  # on top of display_bytes: stream frames (under 400 KiB), an ordinary reply
SMALL_FRAME = 1 * _MiB  # hello, ping, put_file, shutdown replies
TAIL_BYTES = 8 * 1024  # of each stream, kept past the output limit (as the kernel does)
RESULT_CHARS = 20_100  # repr of the last value: the kernel cuts at 20,000 and says so
ERROR_CHARS = 64 * 1024  # an error's message (its start) and traceback (its end)
NAME_CHARS = 200  # an error's type
_PEEK = 512  # bytes kept of the start and the end of a frame that is dropped unread


def execute_allowance(limits: Limits) -> int:
    """The largest frame an ``execute`` or ``shell`` may legitimately send: one display item at most."""
    return min(limits.display_bytes + FRAME_SLACK, wire.MAX_FRAME)


@dataclass
class Dropped:
    """A frame the host did not keep: over the allowance (read past unkept) or not a protocol message."""

    length: int
    allowance: int
    head: bytes
    tail: bytes
    malformed: bool = False

    def kind(self, rid: str) -> str:
        """What it was, told from its first and last bytes (the kernel writes ``id`` and ``type`` first in
        stream and display messages, last in replies): stream, display, reply, other (another request's)
        or unknown. Anything may be forged by the code in the sandbox; this only decides how the loss is
        reported in that code's own result."""
        m = _ID_HEAD.match(self.head.decode("utf-8", "replace"))
        if m:
            if m.group(1) != rid:
                return "other"
            return m.group(2) if m.group(2) in ("stream", "display", "reply") else "unknown"
        m = _ID_TAIL.search(self.tail.decode("utf-8", "replace"))
        if m:
            return "reply" if m.group(1) == rid else "other"
        return "unknown"

    def describe(self) -> str:
        if self.malformed:
            return f"{self.length} bytes that are not a protocol message"
        return f"{self.length} bytes, more than the host accepts for this request ({self.allowance})"

    def as_reply(self) -> dict[str, Any]:
        """A stand-in for a terminal reply that was dropped: an error saying so."""
        m = _REPLY_HEAD.match(self.head.decode("utf-8", "replace"))
        raised = f"the code raised {m.group(1)}, but " if m else ""
        return {
            "status": "error",
            "error": {
                "type": "ProtocolError" if self.malformed else "ReplyTooLarge",
                "message": f"{raised}the interpreter's reply was {self.describe()}; it was dropped",
                "traceback": "",
            },
        }


_ID_HEAD = re.compile(r'\{"id":"([^"\\]{0,200})","type":"(\w{1,20})"')
_ID_TAIL = re.compile(r'"id":"([^"\\]{0,200})","type":"reply"\}$')
_REPLY_HEAD = re.compile(r'\{"status":"error","error":\{"type":"([A-Za-z_][\w.]{0,99})"')


class FrameReader:
    """Reads frames off the interpreter's socket without ever holding more than the caller allows.

    The 4-byte header comes first. A frame of at most ``allowance`` bytes is read in CHUNK pieces and
    decoded; a longer one (any length the header can say, past ``wire.MAX_FRAME`` too) is *discarded*:
    read in CHUNK pieces and thrown away, keeping only its first and last ``_PEEK`` bytes to tell what it
    was. Discarding, not killing the session, because a frame can be too large without malice (a huge
    figure, an exception with a gigantic message) and the connection stays in step, so the execution goes
    on and its result says what was dropped (``output_truncated``, ``display_dropped``, or a
    ``ReplyTooLarge`` error). A sender that announces more than it sends is ended by the execution's
    timeout: the session is then killed, with an error saying so.

    The position inside a frame lives here, between calls: a read cut short by a timeout resumes where it
    stopped, so the connection never loses its framing.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._length: int | None = None
        self._allowance = 0
        self._got = 0
        self._parts: list[bytes] = []
        self._head = b""
        self._tail = b""
        self.last_length = 0

    def partial(self) -> tuple[int, int] | None:
        """(bytes read, bytes announced) while in the middle of a frame, else None."""
        return None if self._length is None else (self._got, self._length)

    async def read(self, allowance: int) -> dict[str, Any] | Dropped:
        if self._length is None:
            (length,) = struct.unpack(">I", await self._reader.readexactly(4))
            self._length, self._allowance, self._got = length, allowance, 0
        length = self._length
        keep = length <= self._allowance
        while self._got < length:
            chunk = await self._reader.readexactly(min(length - self._got, CHUNK))
            self._got += len(chunk)
            if keep:
                self._parts.append(chunk)
            else:
                if len(self._head) < _PEEK:
                    self._head += chunk[: _PEEK - len(self._head)]
                self._tail = (self._tail + chunk[-_PEEK:])[-_PEEK:]
        self._length = None
        self.last_length = length
        if not keep:
            dropped = Dropped(length, self._allowance, self._head, self._tail)
            self._head = self._tail = b""
            return dropped
        payload = b"".join(self._parts)
        self._parts = []
        try:
            return wire.decode(payload)
        except wire.FrameError:
            return Dropped(length, self._allowance, payload[:_PEEK], payload[-_PEEK:], malformed=True)


@dataclass
class Output:
    """What one execution streamed, counted by the host against its :class:`Limits`."""

    limits: Limits
    parts: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    tails: dict[str, str] = field(default_factory=lambda: {"stdout": "", "stderr": ""})
    kept: int = 0
    omitted: int = 0
    items: list[DisplayData] = field(default_factory=list)
    display_used: int = 0
    display_dropped: int = 0

    def stream(self, name: object, text: object) -> OutputChunk | None:
        """Keep ``text`` up to ``output_bytes`` for the execution; past it, count it and keep a tail."""
        if name not in ("stdout", "stderr") or not isinstance(text, str) or not text:
            return None
        assert isinstance(name, str)
        text = clean(text)
        size = len(text.encode("utf-8"))
        room = max(self.limits.output_bytes - self.kept, 0)
        if size > room:
            head = _utf8_prefix(text, room)
            rest = text[len(head) :]
            self.omitted += size - len(head.encode("utf-8"))
            self.tails[name] = _utf8_suffix(self.tails[name] + rest[-TAIL_BYTES:], TAIL_BYTES)
            text, size = head, len(head.encode("utf-8"))
        self.kept += size
        if not text:
            return None
        self.parts[name].append(text)
        return OutputChunk(name="stdout" if name == "stdout" else "stderr", text=text)

    def display(self, mime: object, size: int) -> DisplayData | None:
        """Keep a display item of ``size`` bytes (its message) while within the limits; else count it."""
        limits = self.limits
        if (
            not isinstance(mime, dict)
            or not mime
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in mime.items())
            or len(self.items) >= limits.display_items
            or self.display_used + size > limits.display_bytes
        ):
            self.display_dropped += 1
            return None
        self.display_used += size
        item = DisplayData(mime={clean(k): clean(v) for k, v in mime.items()})
        self.items.append(item)
        return item

    def dropped(self, frame: Dropped, rid: str) -> dict[str, Any] | None:
        """Account for a frame that was not kept; a stand-in reply when it was this request's reply."""
        kind = frame.kind(rid)
        if kind == "reply":
            return frame.as_reply()
        if kind == "display":
            self.display_dropped += 1
        elif kind != "other":  # a stream message, or one that cannot be told: output that was cut
            self.omitted += frame.length
        return None

    def finish(self, output: dict[str, Any]) -> tuple[str, str, bool]:
        """stdout, stderr (with the marker, a tail and notes) and whether output was cut, host or kernel."""
        out, err = "".join(self.parts["stdout"]), "".join(self.parts["stderr"])
        kernel = output.get("omitted_bytes")
        kernel = kernel if isinstance(kernel, int) and not isinstance(kernel, bool) and kernel > 0 else 0
        omitted = self.omitted + kernel
        if omitted:
            tails = self.tails
            if kernel:  # the kernel's tail is the true end of the output
                sent = output.get("tail")
                sent = sent if isinstance(sent, dict) else {}
                tails = {
                    name: _utf8_suffix(clean(text), TAIL_BYTES)
                    if isinstance(text := sent.get(name), str)
                    else ""
                    for name in ("stdout", "stderr")
                }
            limit = self.limits.output_bytes
            marker = f"\n[... thinkbox cut {omitted} bytes of output here (limit {limit}) ...]\n"
            out = out + marker + tails["stdout"]
            if tails["stderr"]:
                err = err + marker + tails["stderr"]
        if self.display_dropped:
            sep = "\n" if err and not err.endswith("\n") else ""
            err += (
                f"{sep}[thinkbox dropped {self.display_dropped} display item(s): an execution keeps at most "
                f"{self.limits.display_items} items and {self.limits.display_bytes} bytes of display data]\n"
            )
        return out, err, bool(omitted)


def reply_error(raw: object) -> ExecutionError:
    """The reply's error, each text capped: the message keeps its start, the traceback its end."""
    fields: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def text(key: str) -> str:
        value = fields.get(key)
        return clean(value) if isinstance(value, str) else ""

    return ExecutionError(
        type=cap_head(text("type"), NAME_CHARS) or "Error",
        message=cap_head(text("message"), ERROR_CHARS),
        traceback=_cap_tail(text("traceback"), ERROR_CHARS),
    )


def clean(text: str) -> str:
    """``text`` as encodable Unicode: lone surrogates (JSON can carry them) become '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _utf8_prefix(text: str, n: int) -> str:
    """The longest start of ``text`` that is at most ``n`` bytes in UTF-8."""
    return text.encode("utf-8")[:n].decode("utf-8", "ignore") if n > 0 else ""


def _utf8_suffix(text: str, n: int) -> str:
    """The longest end of ``text`` that is at most ``n`` bytes in UTF-8."""
    return text.encode("utf-8")[-n:].decode("utf-8", "ignore") if n > 0 else ""


def cap_head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [thinkbox cut {len(text) - limit} characters here]"


def _cap_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"[thinkbox cut {len(text) - limit} characters here] ..." + text[-limit:]


def duration(value: object) -> float | None:
    """A duration the kernel reported, if it is one (a finite number, not negative)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None
