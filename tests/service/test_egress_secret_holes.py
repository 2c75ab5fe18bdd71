"""Ways a session's code could try to get a secret's value, or send it where its rules do not allow,
through the egress proxy, each tried for real: a real proxy on its Unix socket, real HTTP servers on
127.0.0.1 (some answering as no good server would), and a client on the host side speaking to the socket
as the session's relay would (:func:`.egress_support.ask`).

- a path that climbs out of a secret's path prefix (``/v1/../admin``, ``%2e%2e``, ``..;``);
- a host that echoes the key in the status line's reason phrase, in a header's name (compared
  case-blind), in a malformed answer (h11's error message went to the session), inside a JSON string,
  escaped (``\\/``, ``\\u00e9``), or gzipped twice (two Content-Encoding headers: only the last was
  decoded);
- a secret deleted or narrowed while a session lives (the session kept the rules it started with);
- a secret for any port of a host (``host:*``, which the store takes and the proxy dropped);
- a secret sent over plain http to a public address (in clear text on the network) when its rules name
  no port;
- already so: a redirect to another host is the session's to follow (and then checked), the Host header
  is the proxy's, a request smuggled behind a chunked one (Content-Length and Transfer-Encoding both) is
  a request of its own, checked as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import h11
import pytest

from thinkbox.service.egress import swap
from thinkbox.service.egress.swap import SessionSecrets
from thinkbox.service.secrets.grant import SecretGrant

from .egress_support import EchoServer, api_grant, ask, connect, proxy_socket, serve, upstream_ca, world

SID = "s_00000000000000a2"


# -- a secret's path prefix ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/v1/../admin", "/v1/%2e%2E/admin", "/v1/..%2fadmin", "/v1/..;/admin", "/v1/.%2e"]
)
async def test_a_path_that_climbs_out_of_a_secrets_prefix_does_not_get_the_secret(
    tmp_path: Path, path: str
) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [api_grant(value, paths=("/v1/",))]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            inside = await asyncio.to_thread(ask, sock, api.url + "/v1/items", auth)
            out = await asyncio.to_thread(ask, sock, api.url + path, auth)
    assert inside.status == 200
    assert out.status == 403 and "secret API_KEY" in out.body.decode(), out
    assert [r["path"] for r in api.received] == ["/v1/items"]


# -- the status line --------------------------------------------------------------------------------------
class _ReasonEcho(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200, f"OK {self.headers.get('Authorization')}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_key_echoed_in_the_reason_phrase_is_scrubbed(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with serve(_ReasonEcho) as port:
        async with world(tmp_path, [api_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/", auth)
    assert answer.status == 200
    assert value not in answer.reason and answer.reason == f"OK Bearer {placeholder}"


# -- a header's name ---------------------------------------------------------------------------------------
class _NameEcho(BaseHTTPRequestHandler):
    """Puts the bearer value it received into header names: as it is, in upper-case hex, and inside a
    longer name; the headers it owes the client stay."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        value = str(self.headers.get("Authorization")).removeprefix("Bearer ")
        self.send_response(200)
        self.send_header(value, "1")
        self.send_header(value.encode().hex().upper(), "2")
        self.send_header(f"X-Key-{value}-End", "3")
        self.send_header("X-Plain", "kept")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_key_echoed_in_a_header_name_does_not_reach_the_session(tmp_path: Path) -> None:
    value = "sk-AbC" + secrets.token_hex(20)  # mixed case: header names are compared case-blind
    with serve(_NameEcho) as port:
        async with world(tmp_path, [api_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/", auth)
    names = [name.lower() for name, _ in answer.headers]
    assert answer.status == 200 and "x-plain" in names, answer  # the host got the value and answered
    for form in (value, value.encode().hex()):
        assert not any(form.lower() in name for name in names), names


# -- a malformed answer ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _malformed_echo() -> Iterator[int]:
    """A host that answers with a header line that is not one, holding the request's Authorization."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                auth = next(
                    line for line in request.split(b"\r\n") if line.lower().startswith(b"authorization")
                )
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Echo " + auth + b"\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


async def test_a_key_echoed_in_a_malformed_answer_is_scrubbed_from_the_error(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with _malformed_echo() as port:
        async with world(tmp_path, [api_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/", auth)
    message = answer.body.decode()
    assert answer.status == 502 and "illegal header line" in message, message
    assert value not in message and placeholder in message


def test_a_key_echoed_inside_a_json_string_is_scrubbed_however_the_encoder_escapes_it() -> None:
    value = 'aws/Secret+Key"é-0123456789'
    swap = SessionSecrets([SecretGrant("KEY", value, ("api.example.com",))])
    placeholder = swap.env()["KEY"].encode()
    python = json.dumps({"k": value}).encode()  # "\u00e9", "\""
    php = python.replace(b"/", b"\\/")  # PHP's json_encode escapes / too
    for answer in (python, php, json.dumps({"k": value}, ensure_ascii=False).encode()):
        assert swap.scrub(answer) == b'{"k": "' + placeholder + b'"}'


class _TwiceGzipped(BaseHTTPRequestHandler):
    """Echoes the Authorization header gzipped twice, saying so in two Content-Encoding headers."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = gzip.compress(gzip.compress(str(self.headers.get("Authorization")).encode()))
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_an_answer_encoded_twice_is_refused_not_half_decoded(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with serve(_TwiceGzipped) as port:
        async with world(tmp_path, [api_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/", auth)
    seen = answer.body
    with contextlib.suppress(OSError, EOFError):  # what the session's code would do with what it got
        seen = gzip.decompress(seen)
    assert value.encode() not in seen
    assert answer.status == 502 and "content encoding" in answer.body.decode(), answer


# -- a secret changed while a session lives ---------------------------------------------------------------
async def test_a_secret_narrowed_or_deleted_while_a_session_lives_is_sent_no_more(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [api_grant(value)]) as (w, source):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}"}
            session = w.egress.session(SID)
            assert session is not None
            before = await asyncio.to_thread(ask, sock, api.url + "/v1/a", auth)
            source.items = [dataclasses.replace(source.items[0], paths=("/v2/",))]  # its rules narrowed
            session.rules_read = 0.0  # the proxy reads again now, not within seconds
            narrowed = await asyncio.to_thread(ask, sock, api.url + "/v1/b", auth)
            still = await asyncio.to_thread(ask, sock, api.url + "/v2/c", auth)
            source.items = []  # deleted
            session.rules_read = 0.0
            deleted = await asyncio.to_thread(ask, sock, api.url + "/v2/d", auth)
    assert before.status == 200 and still.status == 200
    assert narrowed.status == 403 and "paths /v2/" in narrowed.body.decode()
    assert deleted.status == 401  # the placeholder went as it is: the value no more
    assert [r["authorization"] for r in api.received] == [f"Bearer {value}"] * 2 + [f"Bearer {placeholder}"]


async def test_a_secret_for_any_port_of_a_host_is_swapped_in(tmp_path: Path) -> None:
    """``host:*`` is a rule the store takes (any port); the proxy must read it so, not drop the secret."""
    value = "sk-" + secrets.token_hex(20)
    grant = dataclasses.replace(api_grant(value), hosts=("127.0.0.1:*",))
    with EchoServer(value).running() as api:
        async with world(tmp_path, [grant]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            answer = await asyncio.to_thread(
                ask, sock, api.url + "/", {"Authorization": f"Bearer {placeholder}"}
            )
    assert answer.status == 200 and api.received[0]["authorization"] == f"Bearer {value}"


# -- plain http to a public address ------------------------------------------------------------------------
async def test_a_secret_goes_over_plain_http_to_a_public_address_only_to_a_port_its_rules_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAKE, because no public address is reachable from this machine: 127.0.0.1 is classified as a
    public address for the secrets' clear-text check alone (``swap.special_address``, the one function
    that classifies it there); the proxy's own address check (``proxy.special_address``) still sees
    loopback, which the tenant's rule allows. Everything else is real: the proxy, the servers, TLS."""
    monkeypatch.setattr(swap, "special_address", lambda address: False)
    value = "sk-" + secrets.token_hex(20)
    tls, ca_file = upstream_ca(tmp_path / "test-ca")
    with EchoServer(value).running() as api, EchoServer(value, tls=tls).running() as secure:
        named = dataclasses.replace(api_grant(value), hosts=("127.0.0.1:*", f"127.0.0.1:{api.port}"))
        for grant, sid in ((api_grant(value), SID), (named, "s_00000000000000a3")):
            async with world(tmp_path / sid, [grant], extra_ca_file=ca_file) as (w, _):
                w.allow("127.0.0.1")
                sock, placeholder = await proxy_socket(w, sid)
                auth = {"Authorization": f"Bearer {placeholder}"}
                plain = await asyncio.to_thread(ask, sock, api.url + "/v1/x", auth)
                bare = await asyncio.to_thread(ask, sock, api.url + "/v1/none")  # no secret: goes
                tunnel, ca = f"127.0.0.1:{secure.port}", w.egress.authority.cert_file
                tls_answer = await asyncio.to_thread(
                    ask, sock, secure.url + "/v1/y", auth, tunnel=tunnel, ca=ca
                )
            assert tls_answer.status == 200, tls_answer  # https carries it to any host its rules allow
            if grant is named:  # the rule names the port: the user chose plain http to it
                assert plain.status == 200, plain
            else:  # no port (any port): refused, saying what to do
                message = plain.body.decode()
                assert plain.status == 403 and f"https://127.0.0.1:{api.port}/v1/x" in message, plain
                assert "secret API_KEY" in message
            assert bare.status == 401
    sent = [r["authorization"] for r in api.received if "authorization" in r]
    assert sent == [f"Bearer {value}"] and [r["path"] for r in secure.received] == ["/v1/y"] * 2


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- already so: a redirect, a Host that disagrees, a second request smuggled in the first ----------------
class _Redirect(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    to = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_redirect_is_the_sessions_to_follow_and_a_host_header_is_the_proxys(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as elsewhere, EchoServer(value).running() as api:
        handler = type("Redirect", (_Redirect,), {"to": f"http://localhost:{elsewhere.port}/steal"})
        with serve(handler) as port:
            async with world(tmp_path, [api_grant(value)]) as (w, _):
                w.allow("127.0.0.1")
                sock, placeholder = await proxy_socket(w, SID)
                auth = {"Authorization": f"Bearer {placeholder}"}
                moved = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/", auth)
                lying = {**auth, "Host": f"localhost:{elsewhere.port}"}
                plain = await asyncio.to_thread(ask, sock, api.url + "/plain", lying)
    assert moved.status == 302 and elsewhere.received == []  # not followed by the proxy
    assert plain.status == 200 and api.received[0]["host"] == f"127.0.0.1:{api.port}"


async def test_a_request_smuggled_after_a_chunked_one_is_checked_on_its_own(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as elsewhere, EchoServer(value).running() as api:
        async with world(tmp_path, [api_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = f"Authorization: Bearer {placeholder}\r\n"
            smuggled = (
                f"GET http://localhost:{elsewhere.port}/steal HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n"
            )
            wire = (
                f"POST {api.url}/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: {5 + len(smuggled)}\r\n"
                f"Transfer-Encoding: chunked\r\n{auth}\r\n0\r\n\r\n{smuggled}"
            ).encode()
            statuses = await asyncio.to_thread(_raw_exchange, sock, wire, 2)
    assert statuses == [200, 403]
    assert elsewhere.received == [] and len(api.received) == 1
    assert api.received[0]["content-length"] == "0" and "transfer-encoding" not in api.received[0]


def _raw_exchange(sock: Path, wire: bytes, answers: int) -> list[int]:
    """Send ``wire`` as it is and read ``answers`` responses (parsed by h11): their statuses."""
    with connect(sock) as raw:
        raw.sendall(wire)
        statuses: list[int] = []
        left = b""
        while len(statuses) < answers:  # one h11 client per answer, told a request went (it did, raw)
            client = h11.Connection(h11.CLIENT)
            client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
            if left:  # (empty data would tell h11 the connection closed)
                client.receive_data(left)
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    client.receive_data(raw.recv(65536))
                elif isinstance(event, h11.Response):
                    statuses.append(event.status_code)
            left = client.trailing_data[0]
        return statuses
