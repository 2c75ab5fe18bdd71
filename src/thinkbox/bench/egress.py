"""``thinkbox bench egress``: what the egress proxy adds to a request, against the same request sent directly.

One run measures both sides, interleaved, against one local HTTP/1.1 server on 127.0.0.1 (a subprocess,
keep-alive, a small JSON answer): **direct**, a keep-alive connection from the bench process to the server;
**proxy**, a keep-alive connection from the bench process to a session's egress proxy (its Unix socket, an
absolute-form request, as the in-sandbox relay hands it over), which checks the policy, swaps a secret's
placeholder into the Authorization header, forwards through its upstream pool and scrubs the answer.
Rounds alternate between the sides so that a slow spell of the machine hits both; the added latency is the
difference of the medians. A third figure, **in session**, is the same request made by Python code inside a
real sandbox session through ``HTTP_PROXY`` (relay, then proxy), timed inside the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from thinkbox.bench.egress_pip import PipBench, run_pip_bench
from thinkbox.bench.sandbox import p99
from thinkbox.bench.service_server import machine
from thinkbox.config import Settings
from thinkbox.errors import SandboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.accounts import Principal
from thinkbox.service.egress import Egress
from thinkbox.service.egress.policy import parse_pattern
from thinkbox.service.secrets.grant import FixedGrants, SecretGrant

Progress = Callable[[str], None]
ROUND = 25
TARGET_MS = 5.0
SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b'{"ok": true, "items": [1, 2, 3]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""
METHOD = {
    "direct": "GET over a keep-alive TCP connection from the bench process to the server, wall time",
    "proxy": "the same GET, absolute-form with a secret's placeholder in Authorization, over a keep-alive "
    "connection to the session's egress proxy socket (policy, swap, forward, scrub), wall time",
    "proxy_added_ms_p50": f"median of proxy minus median of direct; rounds of {ROUND} alternate; a warm-up "
    "round of each is not counted",
    "pip": "with --pip N: `!pip install` of two small wheels in a fresh session of a tenant's first user, "
    "then of its second user (the tenant's package cache now filled), timed from the host; medians of N "
    "rounds, a new tenant each",
    "in_session": "an http.client GET through HTTP_PROXY (the relay, then the proxy) by code in a "
    "zygote sandbox session, timed inside the session",
}


class EgressBench(BaseModel):
    """One run of the benchmark; times in milliseconds."""

    samples: int
    direct_ms_p50: float | None = None
    direct_ms_p99: float | None = None
    proxy_ms_p50: float | None = None
    proxy_ms_p99: float | None = None
    proxy_added_ms_p50: float | None = None
    in_session_ms_p50: float | None = None
    in_session_ms_p99: float | None = None
    target_added_le_5ms: bool = False
    pip: PipBench | None = None
    machine: dict[str, Any] = Field(default_factory=machine)
    method: dict[str, str] = Field(default_factory=lambda: dict(METHOD))


class _Client:
    """A keep-alive HTTP/1.1 connection that sends one fixed request and reads a Content-Length answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    async def once(self) -> float:
        started = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if not head.startswith(b"HTTP/1.1 200"):
            raise SandboxError(f"the bench request failed: {head.splitlines()[0]!r}")
        await self.reader.readexactly(length)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.writer.close()


async def run_egress_bench(
    samples: int = 400, pip_rounds: int = 0, progress: Progress = lambda _m: None
) -> EgressBench:
    report = EgressBench(samples=samples)
    data_dir = Path(tempfile.mkdtemp(prefix="thinkbox-bench-egress-"))
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, stdout=asyncio.subprocess.PIPE
    )
    egress: Egress | None = None
    try:
        assert server.stdout is not None
        port = int(await server.stdout.readline())
        settings = Settings(data_dir=data_dir / "data")
        token = "bench-" + os.urandom(8).hex()
        grant = SecretGrant("API_KEY", token, ("127.0.0.1",), header="Authorization: Bearer {secret}")
        egress = await asyncio.to_thread(Egress, settings, None, FixedGrants([grant]))
        owner = Principal(
            tenant_id="t_bench", tenant_name="bench", user_id="u_bench", user_name="bench", key_id=""
        )
        config = await egress.session_config("s_bench", owner, SessionConfig())
        session = egress.session("s_bench")
        assert session is not None
        session.policy.allow = [parse_pattern("127.0.0.1")]
        placeholder = config.env["API_KEY"]
        host = f"127.0.0.1:{port}"
        direct = _Client(
            *await asyncio.open_connection("127.0.0.1", port),
            f"GET /items HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode(),
        )
        proxied = _Client(
            *await asyncio.open_unix_connection(str(session.folder / "proxy.sock")),
            f"GET http://{host}/items HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {placeholder}\r\n\r\n".encode(),
        )
        progress(f"{samples} requests each side, interleaved in rounds of {ROUND}")
        times: dict[str, list[float]] = {"direct": [], "proxy": []}
        for client in (direct, proxied):  # warm-up, not counted
            for _ in range(ROUND):
                await client.once()
        while len(times["proxy"]) < samples:
            for side, client in (("direct", direct), ("proxy", proxied)):
                for _ in range(ROUND):
                    times[side].append(await client.once())
        direct.close()
        proxied.close()
        direct_p50, proxy_p50 = statistics.median(times["direct"]), statistics.median(times["proxy"])
        report.direct_ms_p50, report.proxy_ms_p50 = round(direct_p50, 3), round(proxy_p50, 3)
        report.direct_ms_p99 = _rounded(p99(times["direct"]))
        report.proxy_ms_p99 = _rounded(p99(times["proxy"]))
        report.proxy_added_ms_p50 = round(proxy_p50 - direct_p50, 3)
        report.target_added_le_5ms = report.proxy_added_ms_p50 <= TARGET_MS
        progress("the same request from code in a sandbox session, through the relay")
        await egress.detach("s_bench")
        inside = await _in_session(egress, owner, port, min(samples, 200))
        report.in_session_ms_p50 = round(statistics.median(inside), 3)
        report.in_session_ms_p99 = _rounded(p99(inside))
        if pip_rounds:
            report.pip = await run_pip_bench(data_dir / "pip", pip_rounds, progress)
    finally:
        server.kill()
        await server.wait()
        if egress is not None:
            await egress.aclose()
        shutil.rmtree(data_dir, ignore_errors=True)
    report.machine["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return report


async def _in_session(egress: Egress, owner: Principal, port: int, count: int) -> list[float]:
    code = f"""
import http.client, os, time
c = http.client.HTTPConnection("127.0.0.1", 3128)
auth = {{"Authorization": "Bearer " + os.environ["API_KEY"]}}
out = []
for i in range({count} + {ROUND}):
    t = time.perf_counter()
    c.request("GET", "http://127.0.0.1:{port}/items", headers=auth)
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    out.append((time.perf_counter() - t) * 1000)
print(out[{ROUND}:])
"""
    backend = registry.create_backend("zygote")
    await backend.start()
    try:
        config = await egress.session_config("s_bench_inside", owner, SessionConfig())
        session_state = egress.session("s_bench_inside")
        assert session_state is not None
        session_state.policy.allow = [parse_pattern("127.0.0.1")]
        session = await backend.create_session(config)
        try:
            result = await session.execute(code, timeout=300)
        finally:
            await session.close()
    finally:
        with contextlib.suppress(Exception):
            await backend.aclose()
    if not result.ok:
        raise SandboxError(f"the in-session requests failed: {result.error or result.stderr}")
    return [float(x) for x in result.stdout.strip().strip("[]").split(",")]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def render(report: EgressBench, console: Console) -> None:
    table = Table(title="thinkbox egress proxy benchmark", title_justify="left")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for label, value in (
        ("direct p50 / p99", f"{report.direct_ms_p50:.3f} / {report.direct_ms_p99:.3f} ms"),
        ("through the proxy p50 / p99", f"{report.proxy_ms_p50:.3f} / {report.proxy_ms_p99:.3f} ms"),
        ("added by the proxy p50", f"{report.proxy_added_ms_p50:.3f} ms"),
        (
            "in a session (relay + proxy) p50 / p99",
            f"{report.in_session_ms_p50:.3f} / {report.in_session_ms_p99:.3f} ms",
        ),
        ("requests per side", f"{report.samples}"),
    ):
        table.add_row(label, value)
    console.print(table)
    if report.pip is not None:
        console.print(_pip_line(report.pip))
    verdict = "met" if report.target_added_le_5ms else "MISSED"
    console.print(f"target: added latency p50 <= {TARGET_MS:g} ms: {verdict}")
    console.print(f"machine: {report.machine}")
    for name, how in report.method.items():
        console.print(f"[dim]{name}: {how}[/dim]")


def _pip_line(pip: PipBench) -> str:
    head = f"pip install {' '.join(pip.packages)}: "
    if pip.skipped:
        return head + f"not run: {pip.skipped}"
    return head + (
        f"first user of a tenant {pip.first_user_s_p50} s, second user {pip.second_user_s_p50} s "
        f"(x{pip.second_over_first}; package files from the proxy's tenant cache: "
        f"{pip.files_from_proxy_cache} of {pip.files_fetched}; {pip.rounds} rounds)"
    )
