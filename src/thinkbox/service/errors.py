"""Errors the API answers with: an HTTP status, a stable code and a message that says what to fix."""

from __future__ import annotations

import re

_ID = re.compile(r"[a-z]_[0-9a-f]{16}")


class ApiError(Exception):
    """A 4xx (or 503) answer: ``{"error": {"code": ..., "message": ...}}``; ``param`` names the request
    field at fault (OpenAI's error shape carries it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.param = param

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def is_id(value: str) -> bool:
    """``value`` has the shape of the service's ids (``r_`` + 16 hex digits...): anything else cannot
    exist, and is answered 404 without asking the database (which may refuse it: NUL in PostgreSQL)."""
    return _ID.fullmatch(value) is not None


def no_nul(field: str, value: str) -> str:
    """``value``, or 400 when it holds a NUL character or a lone surrogate (JSON's ``"\\ud800"``): no
    database text column can keep either."""
    if "\x00" in value:
        raise ApiError(400, "bad_request", f"{field} contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400,
            "bad_request",
            f"{field} holds a lone surrogate ({value[exc.start]!r} at character {exc.start}), which is not "
            "Unicode text; send the character whole (both halves of a surrogate pair) or remove it",
        ) from None
    return value
