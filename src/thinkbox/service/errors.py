"""Errors the API answers with: an HTTP status, a stable code and a message that says what to fix."""

from __future__ import annotations


class ApiError(Exception):
    """A 4xx (or 503) answer: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}
