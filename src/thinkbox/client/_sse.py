"""Server-sent events, decoded line by line (the event-stream format of the HTML standard), without I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None


class Decoder:
    """Feed it the lines of a stream (without their line breaks); it returns each message it completes."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Message | None:
        if not line:  # a blank line dispatches what was gathered (nothing, for a message without data)
            message = (
                Message(self._event or "message", "\n".join(self._data), self._id) if self._data else None
            )
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
