"""What the secret store hands the egress proxy for one session, and the forms a value may take in text.

The store (``thinkbox.service.secrets.store``) decides which secrets a user's session may use; the proxy
(``thinkbox.service.egress``) gives the session a placeholder per secret and swaps the real value in only on
requests to a host, path and method the secret's rules allow. Redaction looks for every form of a value.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

PLACEHOLDER_PREFIX = "tbx-secret-"


@dataclass(frozen=True)
class SecretGrant:
    """One secret a session may use: its name, its real value, and where and how it may be sent."""

    name: str
    value: str
    hosts: tuple[str, ...]
    """``host`` or ``host:port`` patterns; ``*.example.com`` matches sub-domains only."""
    header: str | None = None
    """A header template such as ``Authorization: Bearer {secret}``; None: the placeholder is replaced
    wherever it appears in the request's headers."""
    paths: tuple[str, ...] = ()
    """Path prefixes it may be sent to; empty: any path."""
    methods: tuple[str, ...] = ()
    """HTTP methods it may be sent with; empty: any method."""


class GrantSource(Protocol):
    """Where the egress proxy gets a session's secrets from (the service's secret store)."""

    async def grants(self, tenant_id: str, user_id: str) -> list[SecretGrant]: ...

    async def mark_used(self, tenant_id: str, user_id: str, names: list[str]) -> None: ...


class FixedGrants:
    """A GrantSource over a fixed list, the same for every user (benchmarks and tests); records which
    secrets were used."""

    def __init__(self, grants: list[SecretGrant]) -> None:
        self.items = grants
        self.used: list[str] = []

    async def grants(self, tenant_id: str, user_id: str) -> list[SecretGrant]:
        return list(self.items)

    async def mark_used(self, tenant_id: str, user_id: str, names: list[str]) -> None:
        self.used.extend(names)


def new_placeholder() -> str:
    """A fresh placeholder: what the session's environment variable holds instead of the value."""
    return PLACEHOLDER_PREFIX + secrets.token_hex(16)


def forms(value: str) -> list[str]:
    """The ways a value shows up in text: raw, base64 (standard and URL-safe, at each of the three byte
    alignments a value can have inside a longer encoded string), URL-encoded (``/`` escaped or kept), hex,
    in a JSON string (escaped as Python's and PHP's encoders do: ``\\u00e9``, ``\\/``). Longest first."""
    raw = value.encode()
    found = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
    }
    for ascii_only in (True, False):
        escaped = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        found |= {escaped, escaped.replace("/", "\\/")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        # drop the characters that carry the padding bytes and the last partial group
        start = (shift * 4 + 2) // 3 if shift else 0
        core = encoded[start:].rstrip("=")
        usable = core[: len(core) - (1 if (shift + len(raw)) % 3 else 0)]
        for text in (usable, usable.replace("+", "-").replace("/", "_")):
            if len(text) >= 4:
                found.add(text)
    return sorted((f for f in found if f), key=len, reverse=True)
