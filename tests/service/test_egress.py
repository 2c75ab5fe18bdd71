"""The egress proxy for real: sandbox sessions calling HTTP(S) APIs on 127.0.0.1 through it.

Every test starts real servers (an API that wants a bearer token and echoes what it got), a real zygote
sandbox session with the proxy's mounts and environment, and reads what the session saw, what the API
received and what was recorded. The secret's value must never be seen inside the session: not in its
environment, not in its memory (read from the host side), not in an answer, not in the events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from process_support import scan_memory
from thinkbox.agent.events import NetworkRequest
from thinkbox.service import accounts
from thinkbox.service.accounts import Principal
from thinkbox.service.egress import rules
from thinkbox.service.secrets.grant import SecretGrant, forms

from .egress_support import EchoServer, World, upstream_ca, world

TIMEOUT = 120


def _grant(value: str, hosts: tuple[str, ...] = ("127.0.0.1",), **rules: object) -> SecretGrant:
    return SecretGrant(
        name="API_KEY", value=value, hosts=hosts, header="Authorization: Bearer {secret}", **rules
    )  # type: ignore[arg-type]


def _call(url: str, *, body: str | None = None, client: str = "urllib", auth: bool = True) -> str:
    """Code for the session: one request with the placeholder as bearer token; prints status and body."""
    header = "{'Authorization': 'Bearer ' + os.environ['API_KEY']}" if auth else "{}"
    data = "None" if body is None else repr(body.encode())
    method = "'GET'" if body is None else "'POST'"
    if client == "requests":
        call = f"r = requests.request({method}, {url!r}, headers={header}, data={data})"
        return f"import os, requests\n{call}\nprint(r.status_code)\nprint(r.text)"
    if client == "httpx":
        call = f"r = httpx.request({method}, {url!r}, headers={header}, content={data})"
        return f"import os, httpx\n{call}\nprint(r.status_code)\nprint(r.text)"
    return f"""
import os, urllib.request, urllib.error
req = urllib.request.Request({url!r}, data={data}, headers={header})
try:
    r = urllib.request.urlopen(req, timeout=60)
    print(r.status)
    print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
    print(e.read().decode())
"""


def _status_body(stdout: str) -> tuple[int, str]:
    first, _, rest = stdout.partition("\n")
    return int(first), rest.strip()


async def test_a_session_calls_an_api_with_its_placeholder_and_never_holds_the_value(tmp_path: Path) -> None:
    value = "sk-live-" + secrets.token_hex(20)
    tls, ca_file = upstream_ca(tmp_path / "test-ca")
    with EchoServer(value).running() as api, EchoServer(value, tls=tls).running() as secure:
        async with world(tmp_path, [_grant(value)], extra_ca_file=ca_file) as (w, source):
            w.allow("127.0.0.1")
            async with w.session() as session:
                env = await session.execute("import os; print(os.environ['API_KEY'])", timeout=TIMEOUT)
                placeholder = env.stdout.strip()
                assert placeholder.startswith("tbx-secret-") and value not in env.stdout
                calls = [
                    (api.url + "/plain?q=1", "urllib"),
                    (secure.url + "/tls", "urllib"),
                    (secure.url + "/requests", "requests"),
                    (secure.url + "/httpx", "httpx"),
                ]
                for url, client in calls:
                    result = await session.execute(_call(url, body="hi", client=client), timeout=TIMEOUT)
                    assert result.ok, (client, result)
                    status, body = _status_body(result.stdout)
                    assert status == 200, (client, result.stdout)
                    echo = json.loads(body)  # the API got the value; the session sees the placeholder
                    assert echo["headers"]["authorization"] == f"Bearer {placeholder}"
                    assert echo["token_b64"] == placeholder and echo["token_hex"] == placeholder
                    assert echo["body"] == "hi"
                whole = await session.execute(
                    "import os; print(dict(os.environ)); print(open('/proc/self/environ','rb').read())",
                    timeout=TIMEOUT,
                )
                assert value not in whole.stdout and placeholder in whole.stdout
                assert session.process is not None
                pids = session.process.host_pids()
                assert len(pids) >= 2, "the kernel and the relay at least"
                needles = [f.encode() for f in forms(value)]
                seen = set()
                for pid in pids:
                    found, scanned = scan_memory(pid, [*needles, placeholder.encode()])
                    assert scanned > 1 << 20, f"read only {scanned} bytes of pid {pid}'s memory"
                    seen |= found
                assert placeholder.encode() in seen, "the scan must see what the session does hold"
                assert not seen - {placeholder.encode()}, f"the session's memory holds {seen}"
    events = [e for _, e in w.events]
    assert len(events) == 4 and all(isinstance(e, NetworkRequest) for e in events)
    assert all(e.status == 200 and e.secrets == ["API_KEY"] and not e.refused for e in events)
    assert [e.path for e in events] == ["/plain", "/tls", "/requests", "/httpx"]
    assert all(e.bytes_up == 2 and e.bytes_down > 0 for e in events)
    assert value not in json.dumps([e.model_dump() for e in events])
    assert source.used.count("API_KEY") == 4
    assert api.received[0]["authorization"] == f"Bearer {value}"


async def test_the_placeholder_is_refused_where_its_rules_do_not_allow_it(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as allowed, EchoServer(value).running() as other:
        grant = _grant(value, hosts=(f"127.0.0.1:{allowed.port}",), paths=("/v1/",), methods=("GET",))
        async with world(tmp_path, [grant]) as (w, _):
            w.allow("127.0.0.1")
            async with w.session() as session:
                outcomes = {}
                cases = {
                    "ok": _call(allowed.url + "/v1/items"),
                    "other host": _call(other.url + "/v1/items"),
                    "other path": _call(allowed.url + "/admin"),
                    "other method": _call(allowed.url + "/v1/items", body="x"),
                    "in url": _call("http://URL").replace(
                        "'http://URL'", f"{allowed.url + '/v1/items?key='!r} + os.environ['API_KEY']"
                    ),
                    "in body": _call(allowed.url + "/v1/items", body="PLACEHOLDER").replace(
                        "b'PLACEHOLDER'", "os.environ['API_KEY'].encode()"
                    ),
                }
                for name, code in cases.items():
                    result = await session.execute(code, timeout=TIMEOUT)
                    assert result.ok, (name, result)
                    outcomes[name] = _status_body(result.stdout)
    assert outcomes["ok"][0] == 200
    for name in ("other host", "other path", "other method", "in url", "in body"):
        status, message = outcomes[name]
        assert status == 403, (name, outcomes[name])
        assert "secret API_KEY" in message, (name, message)
    assert "may not be sent to" in outcomes["other host"][1]
    assert "in the URL" in outcomes["in url"][1] and "in the body" in outcomes["in body"][1]
    assert other.received == [] and len(allowed.received) == 1
    refused = [e for _, e in w.events if isinstance(e, NetworkRequest) and e.refused]
    assert len(refused) == 5 and all(e.secrets == ["API_KEY"] for e in refused)


async def test_hosts_outside_the_policy_private_addresses_and_direct_connections_are_refused(
    tmp_path: Path,
) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        named = f"http://localhost:{api.port}/x"
        grants = [_grant(value, hosts=("localhost",))]
        async with world(tmp_path, grants) as (w, _), w.session() as session:
            # not in the allow-list: refused, saying what an admin can do (over HTTPS too)
            denied = await session.execute(_call(api.url + "/x"), timeout=TIMEOUT)
            denied_tls = await session.execute(_call(f"https://127.0.0.1:{api.port}/x"), timeout=TIMEOUT)
            direct = await session.execute(
                "import socket\ntry:\n"
                f"    socket.create_connection(('127.0.0.1', {api.port}), timeout=10)\n"
                "    print('connected')\nexcept OSError as e:\n    print('refused', e)",
                timeout=TIMEOUT,
            )
            # the name is allowed, but it resolves to loopback: a rule must name the address itself
            w.allow("localhost")
            _reread_rules(w)
            private = await session.execute(_call(named), timeout=TIMEOUT)
            w.allow("127.0.0.1")
            _reread_rules(w)
            allowed = await session.execute(_call(named), timeout=TIMEOUT)
    status, message = _status_body(denied.stdout)
    assert status == 403 and "not in your tenant's network allow-list" in message
    assert "thinkbox admin network allow" in message
    assert _status_body(denied_tls.stdout) == (status, message)  # the same answer inside the tunnel
    status, message = _status_body(private.stdout)
    assert status == 403 and "private, loopback or link-local address (127.0.0.1)" in message
    assert "thinkbox admin network allow TENANT 127.0.0.1" in message
    assert direct.stdout.startswith("refused"), direct.stdout
    assert _status_body(allowed.stdout)[0] == 200
    assert len(api.received) == 1
    recorded = [e for _, e in w.events if isinstance(e, NetworkRequest)]
    assert [e.refused for e in recorded] == [True, True, True, False]


def _reread_rules(w: World) -> None:
    """The proxy reads its tenant's rules every few seconds: now, for the next request."""
    session = w.egress.session("s_0000000000000001")
    assert session is not None
    session.rules_read = 0.0


async def test_limits_refuse_a_large_body_and_too_many_requests(tmp_path: Path) -> None:
    value = "sk-" + secrets.token_hex(20)
    with EchoServer(value).running() as api:
        async with world(tmp_path, [_grant(value)], max_body_bytes=1000, max_requests=2) as (w, _):
            w.allow("127.0.0.1")
            async with w.session() as session:
                big = await session.execute(_call(api.url + "/big", body="x" * 5000), timeout=TIMEOUT)
                first = await session.execute(_call(api.url + "/1"), timeout=TIMEOUT)
                second = await session.execute(_call(api.url + "/2"), timeout=TIMEOUT)
                third = await session.execute(_call(api.url + "/3"), timeout=TIMEOUT)
                w.egress.begin_run("s_0000000000000001")  # a new run counts from zero
                fourth = await session.execute(_call(api.url + "/4"), timeout=TIMEOUT)
    status, message = _status_body(big.stdout)
    assert status == 403 and "over the limit of 1,000 bytes" in message
    assert [_status_body(r.stdout)[0] for r in (first, second, third, fourth)] == [200, 200, 403, 200]
    assert "egress.max_requests" in _status_body(third.stdout)[1]
    assert [r["path"] for r in api.received] == ["/1", "/2", "/4"]


async def test_a_connection_verified_for_one_host_never_carries_a_request_for_another(
    tmp_path: Path,
) -> None:
    """The proxy keeps upstream connections open for reuse, across sessions and tenants. One whose TLS was
    verified for one host must not carry a request for another name that resolves to the same address:
    where an address routes TLS by name (a shared ingress), that request, with the secret the proxy put
    into it, would reach the first host. The API's certificate is valid for 127.0.0.1, not localhost."""
    tls, ca_file = upstream_ca(tmp_path / "test-ca")
    with EchoServer("t", tls=tls).running() as api:
        async with world(tmp_path, extra_ca_file=ca_file) as (w, _):
            tenant = accounts.create_tenant(w.db, "globex")
            user = accounts.create_user(w.db, "globex", "carol")
            carol = Principal(tenant.id, "globex", user.id, "carol", key_id="")
            for name in ("acme", "globex"):
                for host in ("127.0.0.1", "localhost"):
                    rules.set_rule(w.db, name, host, "allow")
            async with w.session("s_0000000000000001") as alice:
                first = await alice.execute(
                    _call(f"https://127.0.0.1:{api.port}/first", auth=False), timeout=TIMEOUT
                )
            async with w.session("s_0000000000000002", owner=carol) as other:
                second = await other.execute(
                    _call(f"https://localhost:{api.port}/second", auth=False), timeout=TIMEOUT
                )
    assert _status_body(first.stdout)[0] == 401, first  # reached the API (it wants a token)
    status, message = _status_body(second.stdout)
    assert [r["path"] for r in api.received] == ["/first"], (status, message)
    assert status == 502 and "certificate" in message.lower(), (status, message)


async def test_sessions_start_when_the_data_dir_is_reached_through_a_symlink(tmp_path: Path) -> None:
    """The package folders are mounts that grant ownership, whose sources are opened without following any
    symlink: a data dir such as /var/lib/thinkbox linked to another disk must still work."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    async with world(tmp_path / "link") as (w, _), w.session() as session:
        wrote = await session.execute(
            "print(open('/workspace/.packages/site/x.txt', 'w').write('x'))", timeout=TIMEOUT
        )
    assert wrote.ok and wrote.stdout.strip() == "1", wrote
    assert (tmp_path / "disk" / "data" / "egress" / "packages" / "acme" / "alice" / "site" / "x.txt").exists()


PLANT = """
import os
for top in ('/workspace/.pip-cache/wheels/ab/cd', '/workspace/.packages/site'):
    os.makedirs(top, exist_ok=True)
    with open(top + '/evil-1.0-py3-none-any.whl', 'w') as f:
        f.write('planted')
print('planted')
"""
LIST = """
import os
print(sorted(os.path.join(d, n) for top in ('/workspace/.pip-cache', '/workspace/.packages')
             for d, _, names in os.walk(top) for n in names))
"""


async def test_a_users_pip_cache_and_packages_are_out_of_reach_of_the_tenants_other_users(
    tmp_path: Path,
) -> None:
    """pip installs what its cache holds as it is (a wheel it once built from a source archive is not
    checked again), so a cache that another user's code can write would choose what this user's
    ``pip install`` runs, with this user's files and secrets. Each user keeps their own."""
    async with world(tmp_path) as (w, _):
        bob = w.user("bob")
        async with w.session("s_0000000000000001") as alice:
            planted = await alice.execute(PLANT, timeout=TIMEOUT)
        async with w.session("s_0000000000000002", owner=bob) as other:
            seen = await other.execute(LIST, timeout=TIMEOUT)
        async with w.session("s_0000000000000003") as again:
            kept = await again.execute(LIST, timeout=TIMEOUT)
    assert planted.ok and planted.stdout.strip() == "planted", planted
    assert seen.ok and seen.stdout.strip() == "[]", seen
    assert kept.ok and kept.stdout.count("evil-1.0-py3-none-any.whl") == 2, kept  # kept for alice


CONNECT = """
import os, socket
with socket.socket(socket.AF_UNIX) as sock:
    try:
        sock.connect(PATH)
        print("connected")
    except OSError as exc:
        print(type(exc).__name__)
"""
_CONNECT_AS = """
import os, socket, sys
uid, gid, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
""" + CONNECT.replace("PATH", "path")
"""Connects as another user: the interpreter may live where that user cannot read it (pyenv under /root), so
what it needs is imported first."""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user of the host may walk through (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    base = Path(tempfile.mkdtemp(prefix="thinkbox-egress-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_no_other_user_of_the_host_reaches_a_sessions_proxy(open_dir: Path) -> None:
    """A session's proxy puts its user's secrets into requests: only the session reaches it, not a host
    user who can walk to the data dir (one under /var/lib, say)."""
    nobody = pwd.getpwnam("nobody")
    async with world(open_dir) as (w, _), w.session() as session:
        inside = await session.execute(
            CONNECT.replace("PATH", repr("/workspace/.egress/proxy.sock")), timeout=TIMEOUT
        )
        sock = w.egress.root / "sessions" / "s_0000000000000001" / "proxy.sock"
        argv = [sys.executable, "-c", _CONNECT_AS, str(nobody.pw_uid), str(nobody.pw_gid), str(sock)]
        outside = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert inside.ok and inside.stdout.strip() == "connected", inside
    assert outside.stdout.strip() == "PermissionError", outside


def test_the_echo_server_reports_the_encoded_forms_it_would_leak() -> None:
    """The API of these tests echoes its token raw, in base64 and in hex (what the scrubber must catch)."""
    value = "sk-" + secrets.token_hex(8)
    echo = EchoServer(value)
    assert echo.leaks() == {
        "token_b64": base64.b64encode(value.encode()).decode(),
        "token_hex": value.encode().hex(),
    }


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own proxy settings must not reach the upstream client."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
