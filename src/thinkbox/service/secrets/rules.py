"""What a secret may be called, hold, and where and how it may be sent: checked before it is stored.

Every refusal is a 422 (``invalid_secret``) whose message names the field and what to fix. The name
becomes an environment variable of the user's sessions (holding a placeholder), so it must be an
identifier and must not be one the sandbox itself sets or that changes how programs run (``PATH``,
``HTTP_PROXY``, ``LD_PRELOAD``...). Host patterns are ``host`` or ``host:port`` (``port`` may be ``*``);
a wildcard is allowed only as the whole first label (``*.example.com``, sub-domains only) and never so
wide that it matches every host (``*``, ``*.*``, ``*.com``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from thinkbox.service.errors import ApiError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MIN_VALUE_CHARS = 8
MAX_VALUE_BYTES = 64 * 1024
MAX_RULES = 50
MAX_PATH_CHARS = 1024
MAX_HEADER_CHARS = 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RESERVED = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "TERM", "LANG", "LANGUAGE", "TZ",
        "TMPDIR", "HOSTNAME", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4", "PROMPT_COMMAND",
        "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "NODE_OPTIONS", "NODE_PATH", "NODE_EXTRA_CA_CERTS", "VIRTUAL_ENV",
    }
)  # fmt: skip
"""Set by the sandbox or able to change what programs do (compared case-sensitively, as environments are)."""
RESERVED_ANY_CASE = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "FTP_PROXY"})
"""Proxy variables: programs read them in either case."""
RESERVED_PREFIXES = ("LD_", "PYTHON", "LC_", "PIP_", "THINKBOX_", "TBX_")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class SecretRules:
    """Where and how a secret may be sent (see :class:`~.grant.SecretGrant`)."""

    hosts: tuple[str, ...]
    header: str | None = None
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()


def refuse(message: str) -> ApiError:
    return ApiError(422, "invalid_secret", message)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise refuse(
            f"secret name {name[:80]!r} is not usable: it becomes an environment variable of your sessions, "
            "so use 1-64 letters, digits and '_', not starting with a digit (e.g. GITHUB_TOKEN)"
        )
    upper = name.upper()
    if name in RESERVED or upper in RESERVED_ANY_CASE or upper.startswith(RESERVED_PREFIXES):
        raise refuse(
            f"secret name {name!r} is an environment variable the sandbox itself uses or that changes how "
            "programs run: choose another name (e.g. MY_API_TOKEN)"
        )
    return name


def check_value(value: str) -> str:
    if not value:
        raise refuse("value is empty: send the secret's value in the field 'value'")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise refuse("value is not valid text (a lone surrogate): send the value as UTF-8") from None
    if size > MAX_VALUE_BYTES:
        raise refuse(f"value is {size:,} bytes; the most is {MAX_VALUE_BYTES:,} (64 KiB)")
    if len(value) < MIN_VALUE_CHARS:
        raise refuse(
            f"value is {len(value)} characters; give at least {MIN_VALUE_CHARS} (shorter ones are not "
            "credentials, and redacting them would hide ordinary output)"
        )
    if any(c in value for c in "\r\n\0"):
        raise refuse(
            "value contains a line break or NUL: it is sent in an HTTP header, where they cannot appear"
        )
    return value


def check_rules(hosts: list[str], header: str | None, paths: list[str], methods: list[str]) -> SecretRules:
    if not hosts:
        raise refuse(
            'hosts is empty: name the hosts the secret may be sent to, e.g. ["api.github.com"] or '
            '["*.example.com:443"]'
        )
    for field, items in (
        ("hosts", hosts),
        ("paths", paths),
        ("methods", methods),
        ("header", [header or ""]),
    ):
        if len(items) > MAX_RULES:
            raise refuse(f"{field} has {len(items)} entries; the most is {MAX_RULES}")
        for item in items:
            try:
                item.encode()
            except UnicodeEncodeError:
                raise refuse(f"{field}: {item[:100]!r} is not valid text (a lone surrogate)") from None
    return SecretRules(
        hosts=tuple(dict.fromkeys(check_host(h) for h in hosts)),
        header=check_header(header) if header is not None else None,
        paths=tuple(dict.fromkeys(_check_path(p) for p in paths)),
        methods=tuple(dict.fromkeys(_check_method(m) for m in methods)),
    )


def check_host(pattern: str) -> str:
    """``pattern`` normalized (lower case), or a refusal saying why it is malformed or too wide."""
    text = pattern.strip().lower()
    if "/" in text or "@" in text:
        named = urlsplit(text if "//" in text else f"//{text}").hostname or "api.example.com"
        raise refuse(
            f"host pattern {pattern[:100]!r} is a URL, not a host: give the host alone (e.g. {named}), and "
            "a path prefix in paths"
        )
    host, port = _split_port(text, pattern)
    if host in ("*", "*.*") or (host.startswith("*.") and "." not in host[2:]):
        raise refuse(
            f"host pattern {pattern[:100]!r} would match every host (or every host of a top-level domain): "
            "name the host, or a domain's sub-domains as *.example.com"
        )
    if port is not None and port != "*" and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise refuse(f"host pattern {pattern[:100]!r}: the port must be 1-65535 or *")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None:
        shown = f"[{address}]" if address.version == 6 else str(address)
        return shown if port is None else f"{shown}:{port}"
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if len(host) > 253 or not all(LABEL_RE.fullmatch(label) for label in labels):
        raise refuse(
            f"host pattern {pattern[:100]!r} is not a host name: use letters, digits, '-' and '.', "
            "optionally *. first and :PORT last (e.g. api.example.com:443)"
        )
    return host if port is None else f"{host}:{port}"


def _split_port(text: str, pattern: str) -> tuple[str, str | None]:
    if text.startswith("["):  # [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise refuse(f"host pattern {pattern[:100]!r}: an IPv6 address needs its closing ]")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise refuse(f"host pattern {pattern[:100]!r}: only :PORT may follow the ]")
        return text[: end + 1], rest[1:] if rest else None
    if text.count(":") > 1:
        raise refuse(f"host pattern {pattern[:100]!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    host, sep, port = text.partition(":")
    if not host:
        raise refuse(f"host pattern {pattern[:100]!r} has no host")
    return host, port if sep else None


def check_header(template: str) -> str:
    name, sep, value = template.partition(":")
    name = name.strip()
    if not sep or not HEADER_NAME_RE.fullmatch(name):
        raise refuse(
            f"header {template[:100]!r} is not 'Name: value' with a valid header name (letters, digits and "
            "-), e.g. 'Authorization: Bearer {secret}'"
        )
    if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
        raise refuse(f"header {name!r} is set by the proxy itself: use another header (e.g. Authorization)")
    if "{secret}" not in value:
        raise refuse(
            f"header {template[:100]!r} does not contain {{secret}}: write where the value goes, e.g. "
            "'Authorization: Bearer {secret}'"
        )
    if len(template) > MAX_HEADER_CHARS or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise refuse(
            f"header {template[:100]!r} is over {MAX_HEADER_CHARS} characters or has control characters"
        )
    return f"{name}: {value.strip()}"


def _check_path(path: str) -> str:
    if (
        not path.startswith("/")
        or len(path) > MAX_PATH_CHARS
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path)
    ):
        raise refuse(
            f"path {path[:100]!r} is not a path prefix: start it with / and leave out spaces and control "
            "characters (e.g. /repos/)"
        )
    return path


def _check_method(method: str) -> str:
    upper = method.strip().upper()
    if upper not in METHODS:
        raise refuse(f"method {method[:20]!r} is not one of {', '.join(METHODS)}")
    return upper
