"""Server-sent event frames whose JSON data survives any client's line splitting.

A frame's ``data:`` line ends at CR or LF, and JSON escapes both inside strings. But common clients split
lines the way Python's ``str.splitlines`` does (httpx's ``iter_lines``, which the thinkbox client and the
tests use), which also breaks at U+0085, U+2028 and U+2029: a file name or an output holding one of them
would cut an event in two and make its JSON unreadable. Those three are written as JSON escapes instead;
the decoded value is the same.
"""

from __future__ import annotations

_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def frame(data: str, *, event: str | None = None, number: int | None = None) -> bytes:
    """One SSE frame of ``data`` (one line of JSON, or a plain token such as ``[DONE]``)."""
    head = (f"id: {number}\n" if number is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data.translate(_LINE_BREAKS)}\n\n".encode()
