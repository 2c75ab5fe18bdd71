"""Holes a session's code could try in the egress proxy, each tried for real: a real proxy on its Unix
socket, real HTTP(S) servers on 127.0.0.1, and a client on the host side speaking to the socket as the
session's relay would (plain absolute-form requests, or CONNECT and TLS trusting the proxy's CA).

- a package index page whose text (a yanked release's reason, anyone's words on PyPI) names a host: only
  the targets of the index's links teach hosts (a learned host may even be at a private address);
- a compressed answer that decodes to far more than it weighs: counted as decoded, never held whole;
- a path that climbs out of a secret's path prefix (``/v1/../admin``, ``%2e%2e``), or out of the
  index's API pages (whose links teach hosts) to a page anyone writes;
- a host that echoes the key in the status line's reason phrase;
- a second name at the same address reusing a TLS connection verified for the first name;
- more connections held open at once than egress.max_connections (each a file of the service's);
- a host whose malformed answer quotes the key (h11's error message goes to the session);
- a key echoed inside a JSON string, escaped (``\\/``, ``\\u00e9``);
- an answer encoded twice (two Content-Encoding headers: only the last was decoded), or not decodable;
- a secret deleted or narrowed while a session lives (the session kept the rules it started with);
- a secret for any port of a host (``host:*``, which the store takes and the proxy dropped);
- loopback spelled otherwise (``2130706433``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``): already refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import http.client
import json
import os
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from thinkbox.agent.events import NetworkRequest
from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.egress.policy import Policy, index_pages
from thinkbox.service.egress.swap import SessionSecrets
from thinkbox.service.secrets.grant import SecretGrant

from .egress_support import EchoServer, World, upstream_ca, world

SID = "s_00000000000000a1"


@dataclass
class Answer:
    status: int
    reason: str
    body: bytes
    complete: bool


def _grant(value: str, **rules: object) -> SecretGrant:
    return SecretGrant(
        name="API_KEY", value=value, hosts=("127.0.0.1",), header="Authorization: Bearer {secret}", **rules
    )  # type: ignore[arg-type]


async def _socket(w: World) -> tuple[Path, str]:
    """The proxy's socket of a fresh session, and the session's placeholder of API_KEY (if any)."""
    config = await w.egress.session_config(SID, w.owner, SessionConfig())
    session = w.egress.session(SID)
    assert session is not None
    return session.folder / "proxy.sock", config.env.get("API_KEY", "")


def _ask(
    sock: Path,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    tunnel: str | None = None,
    ca: Path | None = None,
) -> Answer:
    """One request through the proxy: absolute-form for http://, CONNECT then TLS when ``tunnel``."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(60)
    folder = os.open(sock.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:  # through the folder's fd: a socket path is limited to 108 bytes, pytest's folders are not
        raw.connect(f"/proc/self/fd/{folder}/{sock.name}")
    finally:
        os.close(folder)
    stream: socket.socket = raw
    target = url
    if tunnel is not None:
        raw.sendall(f"CONNECT {tunnel} HTTP/1.1\r\nHost: {tunnel}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += raw.recv(1)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context(cafile=str(ca))
        stream = context.wrap_socket(raw, server_hostname=tunnel.rsplit(":", 1)[0])
        target = "/" + url.split("/", 3)[3]
    conn = http.client.HTTPConnection("proxy")
    conn.sock = stream
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        try:
            body, complete = response.read(), True
        except http.client.IncompleteRead as cut:
            body, complete = cut.partial, False
        return Answer(response.status, response.reason, body, complete)
    finally:
        conn.close()


def _events(w: World) -> list[NetworkRequest]:
    return [e for sid, e in w.events if sid == SID]


# -- the package index's pages --------------------------------------------------------------------------
class _Index(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_an_index_pages_text_teaches_no_host_to_reach(
    tmp_path: Path,
) -> None:
    with EchoServer("t" * 20).running() as inside:
        # as PyPI shows a yanked file: the author's reason, escaped, in data-yanked
        reason = f"broken; the fixed build is at https://localhost:{inside.port}/ now"
        page = (
            '<!DOCTYPE html><html><body><a href="/files/evil-1.0.tar.gz#sha256=00" '
            f'data-yanked="{reason}">evil-1.0.tar.gz</a></body></html>'
        ).encode()
        handler = type("Index", (_Index,), {"page": page})
        with _serve(handler) as port:
            index = f"http://127.0.0.1:{port}/simple/"
            async with world(tmp_path, index_url=index) as (w, _):
                sock, _ = await _socket(w)
                listing = await asyncio.to_thread(_ask, sock, index + "evil/")
                reached = await asyncio.to_thread(_ask, sock, f"http://localhost:{inside.port}/x")
    assert listing.status == 200 and b"evil-1.0" in listing.body
    assert reached.status == 403 and "not in your tenant's network allow-list" in reached.body.decode()
    assert inside.received == []


@pytest.mark.parametrize(
    "path", ["/simple/../project/x/", "/simple/%2E%2E/project/x/", "/simple/..%2Fproject/x/"]
)
def test_a_path_that_climbs_out_of_the_index_api_is_no_index_page(path: str) -> None:
    """A project's description (``/project/x/`` on PyPI) holds anyone's links: it must teach nothing, even
    asked for as ``/simple/../project/x/``, which the host resolves to it."""
    policy = Policy(index_pages=index_pages(["https://index.example/simple"]))
    assert policy.is_index_page("index.example", 443, "/simple/x/")
    assert not policy.is_index_page("index.example", 443, path)


def test_only_link_targets_of_index_pages_teach_hosts_html_and_json() -> None:
    policy = Policy(index_pages=index_pages(["https://index.example/simple"]))
    policy.index = [p for p, _ in policy.index_pages]
    html_page = (
        b'<a href="https://files.example/p/x-1.whl#sha256=00" data-yanked="see https://yank.example/ now">'
        b"x-1.whl</a> https://text.example/ <a href='https://single.example/p/y.tar.gz'>y</a>"
    )
    policy.learn_links(html_page, b"text/html")
    json_page = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "x",
            "files": [
                {"filename": "x.whl", "url": "https://json.example/x.whl", "yanked": "https://no.example/"}
            ],
        }
    ).encode()
    policy.learn_links(json_page, b"application/vnd.pypi.simple.v1+json")
    assert policy.learned == {"files.example", "single.example", "json.example"}
    assert policy.decide("files.example", 443) is None and policy.decide("yank.example", 443) is not None


# -- compressed answers -----------------------------------------------------------------------------------
class _Bomb(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = gzip.compress(b"\0" * (16 << 20))

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


async def test_a_compressed_answer_counts_what_it_decodes_to(tmp_path: Path) -> None:
    limit = 2_000_000
    assert len(_Bomb.body) < limit // 10  # the wire size alone would pass the limit
    with _serve(_Bomb) as port:
        async with world(tmp_path, [_grant("sk-" + secrets.token_hex(20))], max_bytes=limit) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await _socket(w)
            answer = await asyncio.to_thread(_ask, sock, f"http://127.0.0.1:{port}/bomb")
    assert not answer.complete and len(answer.body) <= limit
    (event,) = _events(w)
    assert event.refused and "egress.max_bytes" in event.reason


# -- a secret's path prefix ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/v1/../admin", "/v1/%2e%2E/admin", "/v1/..%2fadmin", "/v1/..;/admin", "/v1/.%2e"]
)
async def test_a_path_that_climbs_out_of_a_secrets_prefix_does_not_get_the_secret(
    tmp_path: Path, path: str
) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [_grant(value, paths=("/v1/",))]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}"}
            inside = await asyncio.to_thread(_ask, sock, api.url + "/v1/items", auth)
            out = await asyncio.to_thread(_ask, sock, api.url + path, auth)
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
    with _serve(_ReasonEcho) as port:
        async with world(tmp_path, [_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(_ask, sock, f"http://127.0.0.1:{port}/", auth)
    assert answer.status == 200
    assert value not in answer.reason and answer.reason == f"OK Bearer {placeholder}"


# -- TLS connections kept alive ---------------------------------------------------------------------------
async def test_a_tls_connection_verified_for_one_name_is_not_reused_for_another(tmp_path: Path) -> None:
    tls, ca_file = upstream_ca(tmp_path / "upstream-ca")  # its certificate names 127.0.0.1 only
    with EchoServer("t" * 20, tls=tls).running() as api:
        async with world(tmp_path, extra_ca_file=ca_file) as (w, _):
            w.allow("127.0.0.1")
            w.allow("localhost")
            sock, _ = await _socket(w)
            bundle = w.egress.bundle
            first = await asyncio.to_thread(
                _ask, sock, f"https://127.0.0.1:{api.port}/a", tunnel=f"127.0.0.1:{api.port}", ca=bundle
            )
            other = await asyncio.to_thread(
                _ask, sock, f"https://localhost:{api.port}/b", tunnel=f"localhost:{api.port}", ca=bundle
            )
    assert first.status == 401  # reached (the echo server wants a token this test does not send)
    assert other.status == 502 and "CERTIFICATE_VERIFY_FAILED" in other.body.decode(), other
    assert [r["path"] for r in api.received] == ["/a"]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- connections held open ------------------------------------------------------------------------------
class _Hang(BaseHTTPRequestHandler):
    """Answers only once ``release`` is set; ``arrived`` counts the requests it holds."""

    protocol_version = "HTTP/1.1"
    arrived: threading.Semaphore
    release: threading.Event

    def do_GET(self) -> None:
        self.arrived.release()
        self.release.wait(120)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_session_holds_at_most_max_connections_to_its_proxy(tmp_path: Path) -> None:
    arrived, release = threading.Semaphore(0), threading.Event()
    handler = type("Hang", (_Hang,), {"arrived": arrived, "release": release})
    with _serve(handler) as port:
        async with world(tmp_path, max_connections=3) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await _socket(w)
            url = f"http://127.0.0.1:{port}/slow"
            held = [asyncio.create_task(asyncio.to_thread(_ask, sock, url)) for _ in range(3)]
            try:
                for _ in range(3):  # the three are upstream, waiting for their answers
                    assert await asyncio.to_thread(arrived.acquire, True, 120)
                busy = await asyncio.to_thread(_ask, sock, url)
            finally:
                release.set()
                answers = await asyncio.gather(*held)
            session = w.egress.session(SID)
            assert session is not None
            for _ in range(12_000):  # the proxy sees the three close (a condition, waited for)
                if not session.connections:
                    break
                await asyncio.sleep(0.01)
            again = await asyncio.to_thread(_ask, sock, url)  # room again
    assert busy.status == 503 and "egress.max_connections" in busy.body.decode()
    assert [a.status for a in answers] == [200, 200, 200] and again.status == 200


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
        async with world(tmp_path, [_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(_ask, sock, f"http://127.0.0.1:{port}/", auth)
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


async def test_a_small_answer_past_max_bytes_is_refused_saying_why(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [_grant(value)], max_bytes=1024) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}", "X-Pad": "p" * 2000}  # echoed: over 1 KiB
            answer = await asyncio.to_thread(_ask, sock, api.url + "/", auth)
    assert answer.status == 403 and "egress.max_bytes" in answer.body.decode(), answer


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
    with _serve(_TwiceGzipped) as port:
        async with world(tmp_path, [_grant(value)]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}"}
            answer = await asyncio.to_thread(_ask, sock, f"http://127.0.0.1:{port}/", auth)
    seen = answer.body
    with contextlib.suppress(OSError, EOFError):  # what the session's code would do with what it got
        seen = gzip.decompress(seen)
    assert value.encode() not in seen
    assert answer.status == 502 and "content encoding" in answer.body.decode(), answer


class _BrokenGzip(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"this is not gzip data at all"
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_a_compressed_answer_that_does_not_decode_is_cut_and_recorded(tmp_path: Path) -> None:
    with _serve(_BrokenGzip) as port:
        async with world(tmp_path, [_grant("sk-" + secrets.token_hex(20))]) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await _socket(w)
            answer = await asyncio.to_thread(_ask, sock, f"http://127.0.0.1:{port}/")
    assert not answer.complete and answer.body == b""  # the status went first: the body is cut
    (event,) = _events(w)
    assert "does not decode" in event.reason


# -- a secret changed while a session lives ---------------------------------------------------------------
async def test_a_secret_narrowed_or_deleted_while_a_session_lives_is_sent_no_more(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [_grant(value)]) as (w, source):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            auth = {"Authorization": f"Bearer {placeholder}"}
            session = w.egress.session(SID)
            assert session is not None
            before = await asyncio.to_thread(_ask, sock, api.url + "/v1/a", auth)
            source.items = [dataclasses.replace(source.items[0], paths=("/v2/",))]  # its rules narrowed
            session.rules_read = 0.0  # the proxy reads again now, not within seconds
            narrowed = await asyncio.to_thread(_ask, sock, api.url + "/v1/b", auth)
            still = await asyncio.to_thread(_ask, sock, api.url + "/v2/c", auth)
            source.items = []  # deleted
            session.rules_read = 0.0
            deleted = await asyncio.to_thread(_ask, sock, api.url + "/v2/d", auth)
    assert before.status == 200 and still.status == 200
    assert narrowed.status == 403 and "paths /v2/" in narrowed.body.decode()
    assert deleted.status == 401  # the placeholder went as it is: the value no more
    assert [r["authorization"] for r in api.received] == [f"Bearer {value}"] * 2 + [f"Bearer {placeholder}"]


async def test_a_secret_for_any_port_of_a_host_is_swapped_in(tmp_path: Path) -> None:
    """``host:*`` is a rule the store takes (any port); the proxy must read it so, not drop the secret."""
    value = "sk-" + secrets.token_hex(20)
    grant = dataclasses.replace(_grant(value), hosts=("127.0.0.1:*",))
    with EchoServer(value).running() as api:
        async with world(tmp_path, [grant]) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await _socket(w)
            answer = await asyncio.to_thread(
                _ask, sock, api.url + "/", {"Authorization": f"Bearer {placeholder}"}
            )
    assert answer.status == 200 and api.received[0]["authorization"] == f"Bearer {value}"


# -- loopback under other spellings -----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]"])
async def test_loopback_spelled_otherwise_is_refused_even_when_a_rule_names_the_spelling(
    tmp_path: Path, host: str
) -> None:
    with EchoServer("t" * 20).running() as api:
        async with world(tmp_path) as (w, _):
            w.allow(host)  # the name is allowed; the address it stands for is not
            sock, _ = await _socket(w)
            answer = await asyncio.to_thread(_ask, sock, f"http://{host}:{api.port}/x")
    assert answer.status == 403, answer
    assert api.received == []
