"""Placeholders in, real values out: the secret half of the egress proxy.

Each of a session's grants gets a fresh placeholder (what the session's environment variable holds). On a
request, a placeholder in a header is replaced by the real value, through the grant's header template when
it has one, only when the grant's rules allow the request's host, path and method (over plain http to a
public address, only when they name the port: :meth:`SessionSecrets.cleartext`); anywhere else (another
host, the URL, the body) the request is refused. Answers are scrubbed: every form of a real value
(:func:`~thinkbox.service.secrets.grant.forms`) in the headers or body becomes the placeholder again, and a
header whose name holds one is dropped, so a host that echoes the key back does not put it into the
session's memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from thinkbox.errors import ConfigError
from thinkbox.service.egress.policy import Pattern, parse_pattern, plain_path, special_address
from thinkbox.service.secrets.grant import SecretGrant, forms, new_placeholder


class Refused(Exception):
    """The request must not leave: ``reason`` is told to the session (403) and recorded."""

    def __init__(self, reason: str, secrets: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.secrets = secrets or []


@dataclass
class Bound:
    """A grant in one session: its placeholder and where it may go."""

    grant: SecretGrant
    placeholder: bytes
    hosts: list[Pattern]
    template: tuple[bytes, bytes] | None
    """(header name lowercased, value with ``{secret}``) from the grant's header template."""

    def allows(self, host: str, port: int, method: str, path: str) -> bool:
        g = self.grant
        return (
            any(p.matches(host, port) for p in self.hosts)
            and (not g.methods or method.upper() in {m.upper() for m in g.methods})
            and (not g.paths or (plain_path(path) and any(path.startswith(prefix) for prefix in g.paths)))
        )


def _bind(g: SecretGrant, placeholder: bytes) -> Bound | None:
    try:  # the store's ``host:*`` is any port of the host, a pattern without a port here
        hosts = [parse_pattern(h.removesuffix(":*")) for h in g.hosts]
    except ConfigError:
        return None  # a rule the store should have refused: the secret is simply not usable
    template = None
    if g.header and ":" in g.header:
        name, _, value = g.header.partition(":")
        template = (name.strip().lower().encode(), value.strip().encode())
    return Bound(g, placeholder, hosts, template)


class SessionSecrets:
    """The grants of one session, each bound to a fresh placeholder."""

    def __init__(self, grants: list[SecretGrant]) -> None:
        self.bound = [b for g in grants if (b := _bind(g, new_placeholder().encode())) is not None]
        self.pairs: list[tuple[bytes, bytes]] = []
        self.keep = 0
        self._scrub_too(self.bound)

    def update(self, grants: list[SecretGrant]) -> None:
        """The user's secrets as they are now: a changed one keeps its placeholder (the session's
        environment holds it) with its new value and rules; a deleted one is swapped in no more; a new
        one waits for a new session (its variable is not in this one's environment). Every value this
        session was given stays scrubbed from answers."""
        now = {g.name: g for g in grants}
        bound = []
        for b in self.bound:
            g = now.get(b.grant.name)
            fresh = None if g is None else b if g == b.grant else _bind(g, b.placeholder)
            if fresh is not None:
                bound.append(fresh)
        if bound != self.bound:
            self.bound = bound
            self._scrub_too(bound)

    def _scrub_too(self, bound: list[Bound]) -> None:
        pairs = {*self.pairs, *((f.encode(), b.placeholder) for b in bound for f in forms(b.grant.value))}
        self.pairs = sorted(pairs, key=lambda p: len(p[0]), reverse=True)
        self.keep = max((len(f) for f, _ in self.pairs), default=1) - 1
        self.folded = sorted({f.lower() for f, _ in self.pairs}, key=len, reverse=True)

    def env(self) -> dict[str, str]:
        return {b.grant.name: b.placeholder.decode() for b in self.bound}

    def swap(
        self,
        host: str,
        port: int,
        method: str,
        path: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[list[tuple[bytes, bytes]], list[str]]:
        """The headers with placeholders replaced, and the names used; :class:`Refused` when a placeholder
        goes where its rules do not allow."""
        used: list[str] = []
        out = list(headers)
        for b in self.bound:
            name = b.grant.name
            if b.placeholder in target:
                raise Refused(f"the placeholder of secret {name} is in the URL; send it in a header", [name])
            if body and b.placeholder in body:
                raise Refused(f"the placeholder of secret {name} is in the body; send it in a header", [name])
            carrying = [i for i, (_, v) in enumerate(out) if b.placeholder in v]
            if not carrying:
                continue
            if not b.allows(host, port, method, path):
                raise Refused(
                    f"secret {name} may not be sent to {host}:{port} ({method} {path}); its rules allow "
                    f"{', '.join(b.grant.hosts) or 'no host'}"
                    + (f" paths {', '.join(b.grant.paths)}" if b.grant.paths else "")
                    + (f" methods {', '.join(b.grant.methods)}" if b.grant.methods else ""),
                    [name],
                )
            value = b.grant.value.encode()
            if b.template is not None:
                header, template = b.template
                out = [h for i, h in enumerate(out) if i not in carrying and h[0].lower() != header]
                out.append((header, template.replace(b"{secret}", value)))
            else:
                for i in carrying:
                    out[i] = (out[i][0], out[i][1].replace(b.placeholder, value))
            used.append(name)
        return out, used

    def cleartext(self, used: list[str], host: str, port: int, address: str, target: bytes) -> None:
        """:class:`Refused` when a plain-http request to ``address`` would carry a secret in clear text
        across the open network: plain http carries a secret only to a private, loopback or link-local
        address (reached only when a rule of the tenant names it, so the text stays inside the network)
        or to a port that one of the secret's host patterns names (``host:80``: its owner chose plain http
        to that port; ``host`` and ``host:*`` mean any port, not this one in particular)."""
        if not used or special_address(address):
            return
        for b in self.bound:
            if b.grant.name in used and not any(p.port == port and p.matches(host, port) for p in b.hosts):
                where = host if port == 80 else f"{host}:{port}"
                raise Refused(
                    f"secret {b.grant.name} is not sent over plain http to a public address (anyone on "
                    f"the way could read it): request https://{where}{target.decode('ascii', 'replace')} "
                    f"instead, or, if the host has no https, add {host}:{port} to the secret's hosts",
                    [b.grant.name],
                )

    def scrub(self, data: bytes) -> bytes:
        """``data`` with every form of every value replaced by its placeholder."""
        for form, placeholder in self.pairs:
            if form in data:
                data = data.replace(form, placeholder)
        return data

    def scrub_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Answer headers as the session may see them: each value scrubbed, and a header whose name holds
        a form of a value dropped. Names are compared case-blind, since a name's case means nothing (the
        proxy sends them lowercased, so the exact forms the scrubber looks for would miss a lowercased
        value); a name is dropped rather than rewritten because no header a client needs is named after
        a secret, and a rewrite could keep the parts of the name around the value."""
        return [
            (name, self.scrub(value))
            for name, value in headers
            if not any(form in name.lower() for form in self.folded)
        ]

    def scrubber(self) -> Scrubber:
        return Scrubber(self)


class Scrubber:
    """Scrubs a body that arrives in pieces: the last bytes of each piece wait for the next, so a value
    split between two pieces is still found."""

    def __init__(self, secrets: SessionSecrets) -> None:
        self.secrets = secrets
        self.tail = b""

    def feed(self, data: bytes) -> bytes:
        if not self.secrets.pairs:
            return data
        buf = self.secrets.scrub(self.tail + data)
        cut = max(0, len(buf) - self.secrets.keep)
        out, self.tail = buf[:cut], buf[cut:]
        return out

    def flush(self) -> bytes:
        out, self.tail = self.secrets.scrub(self.tail), b""
        return out
