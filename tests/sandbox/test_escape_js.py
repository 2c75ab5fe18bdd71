"""The escape suite's attempts written in JavaScript, run in JavaScript sessions of every backend that runs
them here: host files, network, host processes, another session, fork and memory bombs, privileged calls.

As in test_escape.py, the code reports what each try got (printed as JSON on its last line) and the test
checks that report AND the host afterwards. Where a check could pass because it saw nothing, the
attempt also reads something it must be able to read (its own planted file), so that it fails instead.
"""

# Host-side checks (files, processes) are quick and deliberately synchronous:
# ruff: noqa: ASYNC220, ASYNC221, ASYNC240

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.docker.backend import DockerBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig

pytestmark = [pytest.mark.escape, pytest.mark.asyncio(loop_scope="module")]

PROJECT_DIR = Path(__file__).resolve().parents[2]


async def _js_session(backend: SandboxBackend, **limits: Any) -> Session:
    if isinstance(backend, DockerBackend):
        pytest.skip("the docker backend runs no JavaScript sessions (its image has no Node.js)")
    return await backend.create_session(SessionConfig(language="js", limits=Limits(**limits)))


async def _report(session: Session, code: str, **kwargs: Any) -> Any:
    """Run ``code`` that ends by printing its report as JSON; return the report."""
    result = await session.execute(code, **kwargs)
    assert result.ok and result.stdout.strip(), result
    return json.loads(result.stdout.strip().splitlines()[-1])


async def _serving(backend: SandboxBackend) -> None:
    session = await backend.create_session(SessionConfig(language="js"))
    try:
        result = await session.execute("[...Array(10).keys()].reduce((a, b) => a + b)")
        assert result.result == "45", result
    finally:
        await session.close()


@pytest_asyncio.fixture(loop_scope="module")
async def session(sandbox_backend: SandboxBackend) -> AsyncIterator[Session]:
    s = await _js_session(sandbox_backend)
    try:
        yield s
    finally:
        await s.close()


async def test_host_files_cannot_be_read_and_the_project_is_not_visible(session: Session) -> None:
    paths = ["/etc/shadow", "/etc/sudoers", str(PROJECT_DIR / "pyproject.toml")]
    paths.append(str(PROJECT_DIR / "src/thinkbox/sandbox/inside/kernel.js"))
    dirs = [str(PROJECT_DIR), "/root", "/home", "/run"]
    code = f"""
const fs = require('fs');
const read = (p) => {{ try {{ return 'READ ' + fs.readFileSync(p).subarray(0, 64).toString('hex') }}
                      catch (e) {{ return e.code }} }};
const ls = (p) => {{ try {{ return fs.readdirSync(p).sort() }} catch (e) {{ return e.code }} }};
console.log(JSON.stringify({{files: Object.fromEntries({paths!r}.map(p => [p, read(p)])),
                             dirs: Object.fromEntries({dirs!r}.map(p => [p, ls(p)]))}}))
"""
    report = await _report(session, code)
    for path, outcome in report["files"].items():
        host = Path(path)
        if outcome.startswith("READ") and host.exists():
            assert bytes.fromhex(outcome[5:]) != host.read_bytes()[:64], f"{path} of the host is readable"
    project = report["dirs"][str(PROJECT_DIR)]
    assert not (isinstance(project, list) and {"src", "pyproject.toml", ".git"} & set(project)), report
    for hidden in ("/root", "/home", "/run"):
        host = set(os.listdir(hidden)) if os.path.isdir(hidden) else set()
        seen = set(report["dirs"][hidden]) if isinstance(report["dirs"][hidden], list) else set()
        assert not (seen & host) - {".pyenv"}, f"{hidden} shows host entries {(seen & host)}"


async def test_host_processes_are_invisible_and_cannot_be_signalled(
    sandbox_backend: SandboxBackend, session: Session
) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.25"
    sleeper = subprocess.Popen(["sleep", marker])
    try:
        zygote = getattr(sandbox_backend, "zygote_pid", None)
        targets = [os.getpid(), os.getppid(), sleeper.pid, *([zygote] if zygote else [])]
        code = f"""
const fs = require('fs');
const seen = fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p)).map(p => {{
  try {{ return fs.readFileSync(`/proc/${{p}}/cmdline`, 'latin1') }} catch (e) {{ return '' }} }});
const killed = {{}};
for (const pid of {targets!r}) {{
  try {{ process.kill(pid, 'SIGKILL'); killed[pid] = 'sent' }} catch (e) {{ killed[pid] = e.code }}
}}
try {{ process.kill(-1, 'SIGKILL') }} catch (e) {{}}
console.log(JSON.stringify({{visible: seen.filter(s => s.includes({marker!r}) || s.includes('pytest')),
                             own: seen.filter(s => s.includes('node')).length, killed}}))
"""
        result = await session.execute(code, timeout=10)
        await asyncio.sleep(0.2)
        assert sleeper.poll() is None, "the host's sleep was killed from inside the sandbox"
        if zygote:
            os.kill(zygote, 0)  # still there
        if result.ok:  # kill(-1) may have ended the session itself first
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["own"] >= 1, f"the scan did not even see its own Node: {report}"
            assert report["visible"] == [], f"host processes visible inside: {report}"
        else:
            assert result.killed, result
    finally:
        sleeper.kill()
        sleeper.wait()
    await _serving(sandbox_backend)


async def test_host_loopback_tcp_and_unix_sockets_are_unreachable(session: Session, tmp_path: Path) -> None:
    connections: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("connected")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    unix_path = tmp_path / "host.sock"
    unix_server = await asyncio.start_unix_server(on_connect, path=str(unix_path))
    try:
        code = f"""
const net = require('net');
const attempt = (options) => new Promise((resolve) => {{
  const s = net.connect(options);
  s.setTimeout(2000, () => {{ s.destroy(); resolve('timeout') }});
  s.on('connect', () => {{ s.destroy(); resolve('connected') }});
  s.on('error', (e) => resolve(e.code));
}});
const out = [];
for (const host of ['127.0.0.1', 'localhost', '::1', '0.0.0.0'])
  out.push(await attempt({{host, port: {port}}}));
out.push(await attempt({{path: {str(unix_path)!r}}}));
out.push(await attempt({{host: '1.1.1.1', port: 53}}));
console.log(JSON.stringify(out))
"""
        report = await _report(session, code, timeout=30)
        assert "connected" not in report, report
        assert connections == []
    finally:
        server.close()
        unix_server.close()
        await server.wait_closed()
        await unix_server.wait_closed()


async def test_privileged_calls_through_child_programs_are_refused(session: Session) -> None:
    code = """
const { spawnSync } = require('child_process');
const run = (argv) => spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' }).status;
const status = require('fs').readFileSync('/proc/self/status', 'utf8');
const field = (name) => status.split('\\n').find(l => l.startsWith(name + ':')).split(/\\s+/).slice(1);
console.log(JSON.stringify({
  unshare: run(['unshare', '-Ur', 'true']), mount: run(['mount', '-t', 'tmpfs', 'x', '/tmp']),
  uid: process.getuid(), capEff: field('CapEff')[0], noNewPrivs: field('NoNewPrivs')[0],
  seccomp: field('Seccomp')[0]}))
"""
    report = await _report(session, code)
    assert report["unshare"] != 0 and report["mount"] != 0, report
    assert report["uid"] != 0 and int(report["capEff"], 16) == 0, report
    assert report["noNewPrivs"] == "1" and report["seccomp"] == "2", report


async def test_another_live_sessions_files_are_out_of_reach(sandbox_backend: SandboxBackend) -> None:
    marker = "othersession" + secrets.token_hex(12)
    own = "ownsession" + secrets.token_hex(12)
    victim = await sandbox_backend.create_session(SessionConfig())
    attacker = await _js_session(sandbox_backend)
    try:
        await victim.put_file("private.txt", marker.encode())
        await victim.execute(f"held = {marker!r} * 3")
        await attacker.put_file("mine.txt", own.encode())
        code = f"""
const fs = require('fs');
const found = [], read = [];
const scan = (dir) => {{ let names = []; try {{ names = fs.readdirSync(dir) }} catch (e) {{ return }}
  for (const n of names) {{ const p = `${{dir}}/${{n}}`;
    try {{ const d = fs.readFileSync(p, 'latin1'); read.push(p);
          if (d.includes({marker!r})) found.push(p); if (d.includes({own!r})) found.push('own:' + p) }}
    catch (e) {{}} }} }};
for (const pid of fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p))) {{
  for (const sub of ['root/workspace', 'cwd', 'root/tmp']) scan(`/proc/${{pid}}/${{sub}}`);
  for (const f of ['environ', 'cmdline']) {{ try {{
    if (fs.readFileSync(`/proc/${{pid}}/${{f}}`, 'latin1').includes({marker!r}))
      found.push(`${{pid}}/${{f}}`) }}
    catch (e) {{}} }}
}}
scan('/workspace'); scan('/tmp');
console.log(JSON.stringify(found))
"""
        report = await _report(attacker, code, timeout=60)
        assert any(f.startswith("own:") for f in report), f"the scan did not even find its own file: {report}"
        assert [f for f in report if not f.startswith("own:")] == [], f"the other session's data: {report}"
        check = await victim.execute("len(held), open('private.txt').read()[:12]")
        assert check.result == f"({3 * len(marker)}, 'othersession')", check
    finally:
        await victim.close()
        await attacker.close()


async def test_fork_bomb_is_capped_and_cleaned_up(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    session = await _js_session(sandbox_backend, processes=32)
    owned: set[int] = set()
    try:
        code = """
const { spawn } = require('child_process');
let n = 0, stopped = null;
for (let i = 0; i < 2000 && stopped === null; i++) {
  try {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await new Promise((resolve) => { child.on('spawn', () => { n++; resolve() });
                                      child.on('error', (e) => { stopped = e.code; resolve() }) });
  } catch (e) { stopped = e.code }
}
console.log(JSON.stringify({ n, stopped }))
"""
        report = await _report(session, code, timeout=60)
        assert report["stopped"] is not None and report["n"] < 64, report
        proc = session.process
        owned = set(proc.host_pids()) if proc is not None else set()
        for pid in list(owned):
            owned |= process_tree(pid)
        assert len(owned) < 40, f"{len(owned)} processes in a session limited to 32"
        await _serving(sandbox_backend)
        assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork
    finally:
        await session.close()
    for _ in range(100):
        if not owned & process_tree():
            break
        await asyncio.sleep(0.1)
    assert not owned & process_tree(), "fork bomb processes outlived the session"


async def test_memory_bomb_gives_an_error_or_kills_only_the_session(sandbox_backend: SandboxBackend) -> None:
    session = await _js_session(sandbox_backend, memory_mib=1024)
    try:
        bombs = [
            "const huge = Buffer.alloc(50 * 1024 ** 3)",
            "const chunks = []; while (true) chunks.push(Buffer.alloc(16 * 1024 ** 2, 1))",
            "const arr = []; while (true) arr.push(new Array(1e6).fill(1.5))",
        ]
        for bomb in bombs:
            result = await session.execute(bomb, timeout=60)
            assert result.error is not None or result.killed, result
            if result.killed:
                await session.restart()
        assert (await session.execute("1 + 1")).result == "2"
    finally:
        await session.close()
    await _serving(sandbox_backend)
