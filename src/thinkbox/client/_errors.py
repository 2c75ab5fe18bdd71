"""The client's errors, translated at the boundary: nothing from httpx leaks to callers.

::

    ThinkboxError
    └── ClientError                 the client could not do what was asked
        ├── ApiError                the service answered with an error: status, code, message, retry_after
        └── ServiceUnreachable      no answer from the service (not running, wrong URL, network down)
"""

from __future__ import annotations

import email.utils
import time

import httpx

from thinkbox.errors import ThinkboxError

_RETRYABLE_STATUS = (429, 502, 503, 504)


class ClientError(ThinkboxError):
    code = "client_error"


class ApiError(ClientError):
    """The service answered ``status`` with ``{"error": {"code", "message"}}``. ``retry_after``: seconds
    the service asked to wait (429 and 503 answers), else None."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=status in _RETRYABLE_STATUS)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status} {self.code})"


class ServiceUnreachable(ClientError):
    """No answer from the service; the message names the URL."""

    code = "service_unreachable"
    retryable = True


def api_error(response: httpx.Response, *, key_given: bool) -> ApiError:
    """The error of a read, unsuccessful response."""
    code, message = "http_error", (response.text.strip()[:500] or response.reason_phrase)
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        pass
    if response.status_code == 401 and not key_given:
        message += " (no key was given: set THINKBOX_API_KEY, or pass one: api_key=, thinkbox ask --api-key)"
    return ApiError(response.status_code, code, message, retry_after(response.headers.get("Retry-After")))


def retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) in seconds from now."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def unreachable(base_url: str, exc: httpx.TransportError) -> ServiceUnreachable:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__}); raise the client's timeout if it is busy"
    elif isinstance(exc, httpx.ConnectError):
        reason = f"{exc or type(exc).__name__}; is `thinkbox serve` running there?"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return ServiceUnreachable(f"cannot reach the thinkbox service at {base_url}: {reason}")
