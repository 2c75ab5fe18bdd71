"""Which hosts a session may reach: host patterns, a tenant's rules, the package index, address checks.

Default deny. A tenant's rules (``thinkbox admin network allow|deny TENANT HOST[:PORT]``) allow or deny a
pattern; a deny rule wins. The package index that sessions' pip uses is allowed by default, read from the
host's pip configuration at run time (no registry is named in this project), and so are the hosts its
pages link packages to (learned per session from the links of the index's answers). A name that resolves to a
private, loopback, link-local or otherwise special address is refused unless a rule names that address
itself (``thinkbox admin network allow acme 10.0.0.5:8080``): the check is on the resolved addresses the
proxy then connects to, so an allowed name whose DNS points somewhere inside (a DNS trick, rebinding)
does not get there.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import html.parser
import ipaddress
import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from thinkbox.errors import ConfigError

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class Pattern:
    """``host``, ``host:port``, ``*.domain`` (its sub-domains, not itself) or an IP address (``[v6]:port``
    with a port). No port: any port."""

    host: str
    port: int | None = None

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        host = host.lower().rstrip(".")
        if self.wildcard:
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_pattern(text: str) -> Pattern:
    """A rule's ``HOST[:PORT]``; :class:`ConfigError` saying what is wrong (a wildcard that matches every
    host, a bad port, a URL instead of a host)."""
    raw = text.strip().lower()
    if not raw or "/" in raw or "@" in raw or any(c.isspace() for c in raw):
        raise ConfigError(f"{text!r} is not a host: give HOST or HOST:PORT, e.g. api.example.com:443")
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        host, rest = raw[1:end], raw[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"{text!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
        port = rest[1:] or None
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    number = None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{text!r}: the port must be a number from 1 to 65535")
        number = int(port)
    host = host.rstrip(".")
    with contextlib.suppress(ValueError):
        return Pattern(str(ipaddress.ip_address(host)), number)
    if host in ("*", "") or (host.startswith("*") and not host.startswith("*.")):
        raise ConfigError(f"{text!r} would match every host; name a host or *.domain (e.g. *.example.com)")
    if not _NAME.fullmatch(host) or "*" in host[1:] or (host.startswith("*.") and "." not in host[2:]):
        raise ConfigError(
            f"{text!r} is not a host name pattern: use letters, digits, '-' and '.', optionally *.domain "
            "with at least two labels after the *"
        )
    return Pattern(host, number)


def special_address(address: str) -> bool:
    """Private, loopback, link-local, multicast, reserved or unspecified (IPv4-mapped IPv6 unwrapped)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def plain_path(path: str) -> bool:
    """No segment of ``path`` could climb out of a path prefix on the host: none is ``.`` or ``..``
    (percent-encoded, even twice, or not; ``..;`` as servlet containers read it) or hides a ``/`` or
    ``\\``."""
    for segment in path.split("/"):
        decoded = urllib.parse.unquote(segment)
        while "%" in decoded and (again := urllib.parse.unquote(decoded)) != decoded:
            decoded = again
        if "\\" in decoded or "/" in decoded or decoded.split(";")[0] in (".", ".."):
            return False
    return True


@dataclass
class Policy:
    """One session's view: its tenant's rules, the index hosts, the hosts learned from the index."""

    allow: list[Pattern] = field(default_factory=list)
    deny: list[Pattern] = field(default_factory=list)
    index: list[Pattern] = field(default_factory=list)
    index_pages: list[tuple[Pattern, str]] = field(default_factory=list)
    """(host, path prefix) of the index's pages, e.g. the simple API under ``/simple/``."""
    learned: set[str] = field(default_factory=set)

    def decide(self, host: str, port: int) -> str | None:
        """None when ``host:port`` may be reached (its addresses still to be checked), else why not."""
        if any(p.matches(host, port) for p in self.deny):
            return "denied by a rule of your tenant's network policy"
        if any(p.matches(host, port) for p in self.allow):
            return None
        if any(p.matches(host, port) for p in self.index) or host.lower() in self.learned:
            return None
        return "not in your tenant's network allow-list"

    def private_allowed(self, host: str, port: int, address: str) -> bool:
        """A private, loopback or link-local ``address`` that ``host`` resolved to may be reached: a rule
        names that address itself (a host name is not enough: its DNS may change), or ``host`` is the
        package index of the host's pip configuration, which the administrator chose, or a host the
        index's own links name (a mirror's file host is often inside too; see :meth:`learn_links`)."""
        if self.is_index(host, port) or host.lower() in self.learned:
            return True
        ip = ipaddress.ip_address(address.split("%")[0])
        return any(_same_address(p.host, ip) and p.port in (None, port) for p in self.allow)

    def is_index(self, host: str, port: int) -> bool:
        return any(p.matches(host, port) for p in self.index)

    def is_index_page(self, host: str, port: int, path: str) -> bool:
        """A page of the index's API (under its URL's path), whose links the index chose: other pages of
        the same host (a project's description) hold links anyone could write, and teach nothing."""
        return plain_path(path) and any(
            p.matches(host, port) and path.startswith(prefix) for p, prefix in self.index_pages
        )

    def learn_links(self, page: bytes, content_type: bytes) -> None:
        """Hosts an index page links packages to become reachable: the ``https://`` targets of its links
        (``<a href>`` of the HTML API, ``files[].url`` of the JSON one, PEP 691), parsed as such. Any
        other text of the page (a yanked release's reason is its author's words) teaches nothing."""
        text = page.decode("utf-8", "replace")
        urls: list[str] = []
        if b"json" in content_type.lower():
            with contextlib.suppress(ValueError, RecursionError):
                doc = json.loads(text)
                files = doc.get("files") if isinstance(doc, dict) else None
                if isinstance(files, list):
                    urls = [f["url"] for f in files if isinstance(f, dict) and isinstance(f.get("url"), str)]
        else:
            anchors = _Anchors()
            anchors.feed(text)
            anchors.close()
            urls = anchors.hrefs
        for url in urls:
            with contextlib.suppress(ValueError):
                parts = urllib.parse.urlsplit(url.strip())
                if parts.scheme.lower() == "https" and parts.hostname:
                    self.learned.add(parts.hostname.lower().rstrip("."))


class _Anchors(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _same_address(host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


# -- the package index --------------------------------------------------------------------------------------
def index_urls(configured: str | None = None) -> list[str]:
    """The index URL sessions' pip uses (``configured``, else the host's pip configuration, else pip's
    own default), then any extra index URLs of that configuration; http(s) ones only."""
    urls = [configured] if configured else list(_host_index_urls()[:1])
    urls.extend(_host_index_urls()[1:])
    return [u for u in urls if u.startswith(("http://", "https://"))]


@functools.cache
def _host_index_urls() -> tuple[str, ...]:
    """The host's pip configuration, read once per process (pip is asked in a subprocess)."""
    main = os.environ.get("PIP_INDEX_URL") or _pip_config("global.index-url") or _pip_default() or ""
    extra = os.environ.get("PIP_EXTRA_INDEX_URL") or _pip_config("global.extra-index-url") or ""
    return (main, *extra.split())


def index_patterns(urls: Iterable[str]) -> list[Pattern]:
    return [pattern for pattern, _ in index_pages(urls)]


def index_pages(urls: Iterable[str]) -> list[tuple[Pattern, str]]:
    """(host pattern, path prefix) of each index URL."""
    out = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname:
            out.append((Pattern(parts.hostname.lower(), parts.port), parts.path.rstrip("/") + "/"))
    return out


def _pip_config(key: str) -> str | None:
    """``pip config get KEY`` of the host (its files: /etc/pip.conf, the XDG and user ones)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return _pip_file_config(key)
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and value else _pip_file_config(key)


def _pip_file_config(key: str) -> str | None:
    section, _, name = key.partition(".")
    parser = configparser.ConfigParser()
    files = [
        Path("/etc/pip.conf"),
        Path.home() / ".config" / "pip" / "pip.conf",
        Path.home() / ".pip" / "pip.conf",
    ]
    with contextlib.suppress(configparser.Error):
        parser.read([str(f) for f in files])
    return parser.get(section, name, fallback=None)


def _pip_default() -> str | None:
    """pip's built-in index (what pip uses when nothing is configured), asked of pip itself."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None
