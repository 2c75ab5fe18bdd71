"""Regression tests for the holes a security review of the zygote backend reproduced (docs/security.md).

Each test observes what it checks or fails: memory is read from the host side (root) or from a process
the test made dumpable, and every scan asserts how much it read; a scan that could read nothing fails.
"""

# Host-side checks (files, /proc) are quick and deliberately synchronous:
# ruff: noqa: ASYNC221, ASYNC240

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sandbox_support import start_backend

from process_support import scan_memory
from thinkbox.errors import SandboxUnavailable
from thinkbox.sandbox.confine import cgroups, uids
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, Mount, SessionConfig
from thinkbox.sandbox.zygote.backend import ZygoteBackend

pytestmark = [pytest.mark.escape, pytest.mark.asyncio(loop_scope="module")]

ROOT = os.geteuid() == 0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[ZygoteBackend]:
    started = await start_backend("zygote")
    assert isinstance(started, ZygoteBackend)
    try:
        yield started
    finally:
        await started.aclose()


async def _report(session: Session, code: str) -> object:
    result = await session.execute(code, timeout=120)
    assert result.ok and result.result is not None, result
    return ast.literal_eval(result.result)


# -- 1. freed zygote memory ------------------------------------------------------------------------
async def test_a_sessions_environment_and_id_never_reach_the_zygote_or_later_sessions(
    backend: ZygoteBackend,
) -> None:
    canary = "tbenv" + secrets.token_hex(16)
    first = await backend.create_session(SessionConfig(env={"X_API_TOKEN": canary}))
    later: list[Session] = []
    try:
        assert (await first.execute("import os\nos.environ['X_API_TOKEN']")).result == repr(canary)
        later = [await backend.create_session() for _ in range(3)]
        for s in later:
            assert (await s.execute("1")).result == "1"
        needles = [canary.encode(), first.id.encode()]
        assert first.process is not None
        # positive control: the scanner finds the canary where it must be
        hits, _ = scan_memory(first.process.host_pids()[0], needles)
        assert canary.encode() in hits, "the scan does not see the canary even in its own session"
        pids = {"zygote": backend.zygote_pid}
        pids |= {f"later session {i}": s.process.host_pids()[0] for i, s in enumerate(later) if s.process}
        for name, pid in pids.items():
            assert pid is not None
            hits, scanned = scan_memory(pid, needles)
            assert scanned > 20 * 1024 * 1024, f"only {scanned} bytes of the {name} could be read"
            assert not hits, f"the first session's {sorted(hits)} was found in the memory of the {name}"
        embryo_bytes = 0  # the prepared sessions: their interpreters, inits and sleeps
        for _ in range(100):  # the fork server refills its pool when idle
            if len(backend.idle_pids()) >= 3 * backend.embryos:
                break
            await asyncio.sleep(0.05)
        for pid in backend.idle_pids():
            hits, scanned = scan_memory(pid, needles)
            embryo_bytes += scanned
            assert not hits, f"the first session's {sorted(hits)} was found in prepared session {pid}"
        assert backend.embryos == 0 or embryo_bytes > 20 * 1024 * 1024, embryo_bytes
        # the reviewer's probe, from inside: a later session scans its own memory (made dumpable)
        digest = hashlib.sha256(canary.encode()).hexdigest()
        code = f"""
import ctypes, hashlib, re
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: setresuid cleared it; needed to read our memory
found, scanned = [], 0
with open('/proc/self/maps') as f:
    maps = f.read().splitlines()
with open('/proc/self/mem', 'rb', 0) as mem:
    for line in maps:
        addr, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in addr.split('-'))
        if 'r' not in perms or hi - lo > 1 << 30 or line.endswith('[vvar]'):
            continue
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except OSError:
            continue
        scanned += len(data)
        for m in re.finditer(b'tbenv', data):
            if hashlib.sha256(data[m.start():m.start() + {len(canary)}]).hexdigest() == {digest!r}:
                found.append(addr)
found, scanned
"""
        for s in later:
            found, scanned = await _report(s, code)  # type: ignore[misc]
            assert scanned > 20 * 1024 * 1024, f"the session read only {scanned} bytes of its own memory"
            assert found == [], f"a later session found the first session's secret at {found}"
    finally:
        for s in [first, *later]:
            await s.close()


# -- 2. the session's init ---------------------------------------------------------------------------
async def test_the_sessions_init_is_invisible_unprivileged_and_holds_no_engine_fd(
    backend: ZygoteBackend,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port_hex = f":{listener.getsockname()[1]:04X}"
    try:
        async with await backend.create_session() as s:
            code = f"""
import os
report = {{'pids': {{}}, 'leaks': [], 'mountinfo_read': 0}}
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        uid = [l.split()[1] for l in open(f'/proc/{{pid}}/status') if l.startswith('Uid:')][0]
    except OSError:
        continue
    report['pids'][pid] = int(uid)
    for part in ('mountinfo', 'net/tcp', 'net/tcp6', 'net/unix'):
        try:
            text = open(f'/proc/{{pid}}/{{part}}').read()
        except OSError:
            continue
        if part == 'mountinfo' and text:
            report['mountinfo_read'] += 1
        for needle in ({str(backend.runtime)!r}, {str(backend.runtime_root)!r}, {port_hex!r}):
            if needle in text:
                report['leaks'].append((pid, part, needle))
report
"""
            report = await _report(s, code)
            assert isinstance(report, dict)
            own_uid = int((await s.execute("import os\nos.getuid()")).result or "-1")
            assert report["mountinfo_read"] >= 1, (
                f"no mountinfo could be read: the check saw nothing {report}"
            )
            assert report["leaks"] == [], f"host details visible from the session: {report['leaks']}"
            assert "1" not in report["pids"], f"the session sees its init: {report['pids']}"
            assert set(report["pids"].values()) == {own_uid}, f"processes of other uids visible: {report}"
            # host side: the init runs as no session's uid, with no capabilities and no engine fd
            assert s.process is not None
            init = s.process.pid
            status = Path(f"/proc/{init}/status").read_text()
            ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
            assert int(ids["CapEff"][0], 16) == 0 and int(ids["CapPrm"][0], 16) == 0, status
            if ROOT:
                assert set(ids["Uid"]) == {str(backend.uid_base)} != {str(own_uid)}, ids["Uid"]
            fds = {os.readlink(f"/proc/{init}/fd/{fd}") for fd in os.listdir(f"/proc/{init}/fd")}
            assert fds == {"/dev/null"}, f"the init holds {fds}"
    finally:
        listener.close()


# -- 6. mounts ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not ROOT, reason="mounting a submount on the host needs root")
async def test_a_read_only_mount_is_read_only_in_its_submounts(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(sub)], check=True)
    os.chmod(tmp_path, 0o777)
    # an engine of its own, started after the mount: mounts made on the host later do not propagate
    # into sessions already prepared
    own = await start_backend("zygote")
    try:
        config = SessionConfig(mounts=(Mount(source=tmp_path, target="data", read_only=True),))
        async with await own.create_session(config) as s:
            code = """
import os
out = []
for path in ('data/top.txt', 'data/sub/inner.txt'):
    try:
        open(path, 'w').write('x')
        out.append('WRITTEN')
    except OSError as e:
        out.append(e.errno)
out, os.path.ismount('data/sub')
"""
            written, is_mount = await _report(s, code)  # type: ignore[misc]
        assert is_mount, "the submount did not reach the session: the check would see nothing"
        assert written == [30, 30], f"writes into the read-only mount gave {written} (30 = EROFS)"
        assert not (sub / "inner.txt").exists() and not (tmp_path / "top.txt").exists()
    finally:
        await own.aclose()
        subprocess.run(["umount", "-l", str(sub)], check=False)


async def test_a_new_session_never_gets_the_workspace_of_one_being_closed(backend: ZygoteBackend) -> None:
    """Closing a session and opening another at the same moment: the new one may get the freed slot
    number, never the files still in that slot's workspace."""
    for _ in range(5):
        old = await backend.create_session()
        await old.put_file("left-behind.txt", b"of the closed session")
        # the backend's release of a live session (as a pool reaping it, or a crash of its owner)
        _, new = await asyncio.gather(backend.release(old.id), backend.create_session())
        try:
            listing = await new.execute("import os\nsorted(os.listdir('.'))")
            assert listing.result == "[]", f"a new session found {listing.result} in its workspace"
        finally:
            await new.close()
            await old.close()


# -- 8. uids -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not ROOT, reason="sessions have host uids of their own only when the engine is root")
async def test_two_engines_never_share_a_session_uid_and_stay_off_subuid_ranges(
    backend: ZygoteBackend,
) -> None:
    other = await start_backend("zygote")
    assert isinstance(other, ZygoteBackend)
    try:
        async with await backend.create_session() as a, await other.create_session() as b:
            ua = int((await a.execute("import os\nos.getuid()")).result or "0")
            ub = int((await b.execute("import os\nos.getuid()")).result or "0")
    finally:
        await other.aclose()
    assert ua != ub, f"two engines gave their sessions the same host uid {ua}"
    ranges = []
    for path in ("/etc/subuid", "/etc/subgid"):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                parts = line.split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    ranges.append(range(100000, 100000 + 65536 * 64))  # the usual subuid ranges, present or not
    for uid in (ua, ub):
        assert uid >= uids.FIRST_UID and not any(uid in r for r in ranges), uid


# -- 9. smaller ones ---------------------------------------------------------------------------------
async def test_dev_shm_follows_the_tmp_limit_and_host_revealing_proc_files_are_empty(
    backend: ZygoteBackend,
) -> None:
    async with await backend.create_session(SessionConfig(limits=Limits(tmp_mib=32))) as s:
        code = """
import os
st = os.statvfs('/dev/shm')
texts = {}
for name in ('cmdline', 'interrupts', 'diskstats', 'softirqs', 'partitions', 'locks'):
    try:
        texts[name] = open('/proc/' + name).read()
    except OSError as e:
        texts[name] = 'errno %d' % e.errno
irq = sorted(os.listdir('/proc/irq')) if os.path.isdir('/proc/irq') else None
st.f_blocks * st.f_frsize, texts, irq, len(open('/proc/meminfo').read()) > 0
"""
        size, texts, irq, meminfo = await _report(s, code)  # type: ignore[misc]
    assert size == 32 * 1024 * 1024, f"/dev/shm is {size} bytes, not the 32 MiB of tmp_mib"
    for name, text in texts.items():
        host = Path(f"/proc/{name}").read_text() if Path(f"/proc/{name}").exists() else ""
        assert text in ("", "errno 2"), f"/proc/{name} shows {text[:80]!r} (host: {host[:40]!r})"
    assert irq in (None, []), irq
    assert meminfo, "ordinary /proc files must stay readable"


async def test_the_session_socket_is_close_on_exec(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        code = """
import fcntl, os, socket, stat
socks = []
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            socks.append(bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
    except OSError:
        pass
socks
"""
        flags = await _report(s, code)
    assert flags and all(flags), f"sockets of the session and their close-on-exec flags: {flags}"


async def test_cgroup_v1_limits_swap_too(backend: ZygoteBackend) -> None:
    lay = cgroups.layout()
    if lay is None or lay.version != 1:
        pytest.skip(f"no cgroup v1 here ({cgroups.unavailable_reason() or 'v2'})")
    memsw = lay.parents["memory"] / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        pytest.skip("this kernel has no swap accounting (memory.memsw.*)")
    async with await backend.create_session(SessionConfig(limits=Limits(memory_mib=300))) as s:
        name = getattr(s.process, "cgroup_name", None)
        assert name is not None
        d = lay.parents["memory"] / name
        memory = int((d / "memory.limit_in_bytes").read_text())
        swap = int((d / "memory.memsw.limit_in_bytes").read_text())
    assert swap == memory == (300 + cgroups.MEMORY_BACKSTOP_MIB) * 1024 * 1024


def test_a_predictable_runtime_dir_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "thinkbox-1000"
    link.symlink_to(tmp_path)
    with pytest.raises(SandboxUnavailable, match="not a private directory"):
        uids.private_dir(link)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(SandboxUnavailable, match="not a private directory"):
        uids.private_dir(shared)
    mine = uids.private_dir(tmp_path / "fresh")
    assert mine.is_dir() and (mine.stat().st_mode & 0o777) == 0o700


def test_the_uid_blocks_of_two_holders_differ(tmp_path: Path) -> None:
    a, b = uids.reserve(tmp_path), uids.reserve(tmp_path)
    try:
        assert a.base != b.base and {a.base, b.base} <= {uids.FIRST_UID, uids.FIRST_UID + uids.BLOCK_SIZE}
        a.release()
        c = uids.reserve(tmp_path)
        assert c.base == uids.FIRST_UID, "a released block is free again"
        c.release()
    finally:
        a.release()
        b.release()
