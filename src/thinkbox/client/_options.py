"""What both clients share: the service's URL, the key, timeouts and the reconnect policy."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

import thinkbox
from thinkbox.client._errors import ApiError, ClientError, ServiceUnreachable, api_error, unreachable
from thinkbox.client._wire import Call
from thinkbox.errors import ConfigError

KEY_ENV = "THINKBOX_API_KEY"
STREAM_READ_S = 45.0
"""An event stream with nothing on it this long is broken: the service sends a keep-alive every 15 s."""
ASK_WAIT_MAX_S = 60.0
"""``ask`` waits once for a 429's Retry-After when it is at most this long."""
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=32)
"""Every followed run holds a connection: no cap (httpx's default of 100 would stall the 101st)."""


@dataclass
class Options:
    base_url: str
    api_key: str | None
    timeout: float
    reconnect_s: float
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the service URL must start with http:// or https://, not {self.base_url!r}")
        self.base_url = url
        if self.api_key is None:
            self.api_key = os.environ.get(KEY_ENV) or None
        self.headers = {"User-Agent": f"thinkbox-client/{thinkbox.__version__}"}
        if self.api_key:
            self.api_key = check_key(self.api_key)
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    def http_args(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers, "timeout": self.timeout, "limits": LIMITS}

    def timeout_for(self, call: Call[Any]) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + (call.wait_s or 0.0))

    def stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_S))

    def api_error(self, response: httpx.Response) -> ApiError:
        return api_error(response, key_given=bool(self.api_key))

    def unreachable(self, exc: httpx.TransportError) -> ServiceUnreachable:
        return unreachable(self.base_url, exc)


def check_key(key: str) -> str:
    """``key`` without the whitespace around it; ConfigError when it cannot be a key of the service (it goes
    in an HTTP header, which httpx refuses with an error about headers). The message never repeats it."""
    key = key.strip()
    fix = "pass the key `thinkbox admin key create` printed (--api-key, THINKBOX_API_KEY or api_key=)"
    if not key:
        raise ConfigError(f"the API key is empty: {fix}")
    if not (key.isascii() and key.isprintable()):
        raise ConfigError(
            f"the API key holds characters no key has (not ASCII, or control characters): {fix}"
        )
    return key


class Reconnect:
    """When a broken event stream is opened again: at once, then backing off to 2 s (longer when the
    service asks with Retry-After), giving up ``limit_s`` after the last event that came."""

    def __init__(self, run_id: str, limit_s: float) -> None:
        self.run_id, self.limit_s = run_id, limit_s
        self.attempt = 0
        self.since = time.monotonic()

    def progress(self) -> None:
        self.attempt = 0
        self.since = time.monotonic()

    def delay(self, error: ClientError | None) -> float:
        """Seconds to wait before the next attempt; raises when it is time to give up."""
        if isinstance(error, ApiError) and not error.retryable:
            raise error
        if time.monotonic() - self.since > self.limit_s:
            if error is not None:
                raise error
            raise ServiceUnreachable(
                f"the event stream of run {self.run_id} kept breaking for {self.limit_s:g} s without a new "
                "event; follow it again later (the run goes on)"
            )
        delay = 0.0 if self.attempt == 0 else min(0.05 * 2**self.attempt, 2.0)
        if isinstance(error, ApiError) and error.retry_after:
            delay = max(delay, min(error.retry_after, 10.0))
        self.attempt += 1
        return delay
