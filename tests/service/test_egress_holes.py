"""Holes a session's code could try against the egress proxy's policy and limits, each tried for real: a
real proxy on its Unix socket, real HTTP(S) servers on 127.0.0.1, and a client on the host side speaking
to the socket as the session's relay would (:func:`.egress_support.ask`). Those about secret values are
in ``test_egress_secret_holes.py``.

- a package index page whose text (a yanked release's reason, anyone's words on PyPI) names a host: only
  the targets of the index's links teach hosts (a learned host may even be at a private address), and
  only on the index's API pages, not on one reached through ``/simple/../``;
- a compressed answer that decodes to far more than it weighs: counted as decoded, never held whole; one
  that does not decode; a small answer past egress.max_bytes (a 403 saying why); requests whose bytes
  are in their headers (counted too);
- more connections held open at once than egress.max_connections (each a file of the service's);
- loopback spelled otherwise (``2130706433``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``): already refused.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from thinkbox.agent.events import NetworkRequest
from thinkbox.service.egress.policy import Policy, index_pages

from .egress_support import EchoServer, World, api_grant, ask, connect, proxy_socket, serve, world

SID = "s_00000000000000a1"


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
        with serve(handler) as port:
            index = f"http://127.0.0.1:{port}/simple/"
            async with world(tmp_path, index_url=index) as (w, _):
                sock, _ = await proxy_socket(w, SID)
                listing = await asyncio.to_thread(ask, sock, index + "evil/")
                reached = await asyncio.to_thread(ask, sock, f"http://localhost:{inside.port}/x")
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
    with serve(_Bomb) as port:
        async with world(tmp_path, [api_grant("sk-" + secrets.token_hex(20))], max_bytes=limit) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await proxy_socket(w, SID)
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/bomb")
    assert not answer.complete and len(answer.body) <= limit
    (event,) = _events(w)
    assert event.refused and "egress.max_bytes" in event.reason


async def test_a_small_answer_past_max_bytes_is_refused_saying_why(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [api_grant(value)], max_bytes=1024) as (w, _):
            w.allow("127.0.0.1")
            sock, placeholder = await proxy_socket(w, SID)
            auth = {"Authorization": f"Bearer {placeholder}", "X-Pad": "p" * 2000}  # echoed: over 1 KiB
            answer = await asyncio.to_thread(ask, sock, api.url + "/", auth)
    assert answer.status == 403 and "egress.max_bytes" in answer.body.decode(), answer


async def test_request_headers_count_toward_max_bytes(tmp_path: Path) -> None:
    """Header bytes are bytes sent: requests of big headers and no body stop at egress.max_bytes."""
    limit, pad = 64 * 1024, 12_000  # a header line h11 takes (under 16 KiB), five of them fit the limit
    with EchoServer("sk-" + secrets.token_hex(20)).running() as api:  # 401: a small answer each time
        async with world(tmp_path, max_bytes=limit) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await proxy_socket(w, SID)
            answers = [
                await asyncio.to_thread(ask, sock, f"{api.url}/{i}", {"X-Pad": "p" * pad}) for i in range(10)
            ]
    assert len(api.received) <= limit // pad, [a.status for a in answers]
    assert answers[-1].status == 403 and "egress.max_bytes" in answers[-1].body.decode(), answers[-1]


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
    with serve(_BrokenGzip) as port:
        async with world(tmp_path, [api_grant("sk-" + secrets.token_hex(20))]) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await proxy_socket(w, SID)
            answer = await asyncio.to_thread(ask, sock, f"http://127.0.0.1:{port}/")
    assert not answer.complete and answer.body == b""  # the status went first: the body is cut
    (event,) = _events(w)
    assert "does not decode" in event.reason


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


def _write_after_the_answer(sock: Path, url: str) -> bytes:
    """A client slower than the proxy: it writes its request only once the refusal has arrived, then reads
    the rest. A proxy that closed right after answering makes the write fail (EPIPE), the answer unread."""
    with connect(sock) as client:
        answer = client.recv(12)  # the proxy answers a connection past its limit without reading it
        client.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        while chunk := client.recv(65536):
            answer += chunk
        return answer


async def test_a_session_holds_at_most_max_connections_to_its_proxy(tmp_path: Path) -> None:
    arrived, release = threading.Semaphore(0), threading.Event()
    handler = type("Hang", (_Hang,), {"arrived": arrived, "release": release})
    with serve(handler) as port:
        async with world(tmp_path, max_connections=3) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await proxy_socket(w, SID)
            url = f"http://127.0.0.1:{port}/slow"
            held = [asyncio.create_task(asyncio.to_thread(ask, sock, url)) for _ in range(3)]
            try:
                for _ in range(3):  # the three are upstream, waiting for their answers
                    assert await asyncio.to_thread(arrived.acquire, True, 120)
                busy = await asyncio.to_thread(ask, sock, url)
                late = await asyncio.to_thread(_write_after_the_answer, sock, url)
            finally:
                release.set()
                answers = await asyncio.gather(*held)
            session = w.egress.session(SID)
            assert session is not None
            for _ in range(12_000):  # the proxy sees the three close (a condition, waited for)
                if not session.connections:
                    break
                await asyncio.sleep(0.01)
            again = await asyncio.to_thread(ask, sock, url)  # room again
    assert busy.status == 503 and "egress.max_connections" in busy.body.decode()
    assert late.startswith(b"HTTP/1.1 503") and b"egress.max_connections" in late, late
    assert [a.status for a in answers] == [200, 200, 200] and again.status == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_client_still_writing_a_refused_body_reads_why(tmp_path: Path, chunked: bool) -> None:
    """A body over egress.max_body_bytes is refused before the rest of it arrives: by its Content-Length,
    or once its chunks pass the limit. urllib sends the head and the body in two writes; a proxy that
    closed right after its 403 made the session's relay fail writing the body (EPIPE) and drop the 403 it
    held: the session's code got RemoteDisconnected instead of why."""
    with EchoServer("t").running() as api:
        async with world(tmp_path, max_body_bytes=1000) as (w, _):
            w.allow("127.0.0.1")
            sock, _ = await proxy_socket(w, SID)
            url = api.url + "/big"
            answer = await asyncio.to_thread(_body_after_the_answer, sock, url, chunked)
    assert answer.startswith(b"HTTP/1.1 403") and b"over the limit of 1,000 bytes" in answer, answer
    assert api.received == [] and [e.refused for e in _events(w)] == [True]


def _body_after_the_answer(sock: Path, url: str, chunked: bool) -> bytes:
    """A client slower than the proxy: it sends a request's head (and 1,500 bytes of a chunked body), reads
    the whole answer (up to the proxy's end of it), then sends the rest of the body (5,000 bytes in all)."""
    if chunked:
        head, rest = "Transfer-Encoding: chunked\r\n\r\n5dc\r\n" + "x" * 1500 + "\r\n", b"dac\r\n"
        rest += b"x" * 3500 + b"\r\n0\r\n\r\n"
    else:
        head, rest = "Content-Length: 5000\r\n\r\n", b"x" * 5000
    with connect(sock) as client:
        client.sendall(f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}".encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        client.sendall(rest)
        return answer


# -- loopback under other spellings -----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]"])
async def test_loopback_spelled_otherwise_is_refused_even_when_a_rule_names_the_spelling(
    tmp_path: Path, host: str
) -> None:
    with EchoServer("t" * 20).running() as api:
        async with world(tmp_path) as (w, _):
            w.allow(host)  # the name is allowed; the address it stands for is not
            sock, _ = await proxy_socket(w, SID)
            answer = await asyncio.to_thread(ask, sock, f"http://{host}:{api.port}/x")
    assert answer.status == 403, answer
    assert api.received == []


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
