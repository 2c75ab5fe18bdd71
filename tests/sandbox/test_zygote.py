"""The zygote backend, for real: isolation, workspace, restart, hostile code, the fork server's life cycle."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from sandbox_support import descendants, start_backend

from thinkbox.errors import ConfigError, SessionDead, SessionStartError
from thinkbox.sandbox.confine import cgroups
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, Mount, SessionConfig
from thinkbox.sandbox.zygote.backend import ZygoteBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")


PROJECT = Path(__file__).resolve().parents[2]  # wherever this checkout lives (CI clones anywhere)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[ZygoteBackend]:
    started = await start_backend("zygote")
    assert isinstance(started, ZygoteBackend)
    try:
        yield started
    finally:
        await started.aclose()


async def run(session: Session, code: str) -> str:
    result = await session.execute(code)
    assert result.error is None, result.error
    return result.stdout


async def test_state_persists_and_preloaded_libraries_import_instantly(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        await run(s, "x = 41")
        started = time.perf_counter()
        result = await s.execute("import numpy, pandas, matplotlib.pyplot as plt\nx + 1")
        elapsed = time.perf_counter() - started
        assert result.result == "42"
        assert elapsed < 1.0, f"imports took {elapsed:.3f} s: the libraries were not preloaded"


async def test_two_sessions_get_different_random_streams(backend: ZygoteBackend) -> None:
    code = "import random, numpy\nprint(random.random(), numpy.random.rand())"
    async with await backend.create_session() as a, await backend.create_session() as b:
        out_a, out_b = await run(a, code), await run(b, code)
    first, second = out_a.split(), out_b.split()
    assert first[0] != second[0] and first[1] != second[1]


async def test_each_session_runs_as_its_own_uid_without_privileges(backend: ZygoteBackend) -> None:
    code = (
        "import os\n"
        "st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)\n"
        "print(os.getuid(), os.getgid(), st['CapEff'].strip(), st['CapBnd'].strip(),"
        " st['NoNewPrivs'].strip(), st['Seccomp'].strip(), os.getgroups())"
    )
    async with await backend.create_session() as a, await backend.create_session() as b:
        out_a, out_b = (await run(a, code)).split(), (await run(b, code)).split()
    assert out_a[0] != out_b[0]
    for out in (out_a, out_b):
        assert int(out[0]) >= 100000 and out[0] == out[1]
        assert out[2:6] == ["0000000000000000", "0000000000000000", "1", "2"]
        assert out[6] == "[]"


async def test_connecting_to_a_host_loopback_listener_fails(backend: ZygoteBackend) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        async with await backend.create_session() as s:
            result = await s.execute(
                f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
            )
            assert result.error is not None and result.error.type in ("ConnectionRefusedError", "OSError")
            out = await run(
                s, "print([l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])"
            )
            assert out.strip() == "['lo']"
    finally:
        server.close()


async def test_host_files_are_invisible(backend: ZygoteBackend) -> None:
    project = PROJECT
    paths = ("/etc/shadow", f"{project}/README.md", "/root/.bashrc", "/home", "/sys", "/run/thinkbox")
    code = (
        "import os, json\n"
        f"print(json.dumps({{p: os.path.exists(p) for p in {paths!r}}}))\n"
        "listing = lambda d: sorted(os.listdir(d)) if os.path.isdir(d) else None\n"
        f"print(json.dumps([listing('/root'), listing({str(project)!r})]))"
    )
    async with await backend.create_session() as s:
        out = (await run(s, code)).splitlines()
    assert json.loads(out[0]) == dict.fromkeys(paths, False)
    root_listing, project_listing = json.loads(out[1])
    # only the interpreter's own directories are bound in: the Python install and the venv
    assert set(root_listing or []) <= {".pyenv"}
    assert set(project_listing or []) <= {".venv"}


async def test_root_is_read_only_and_workspace_tmp_are_writable(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        result = await s.execute("open('/usr/evil', 'w')")
        assert result.error is not None and "Read-only" in result.error.message
        result = await s.execute("open('/etc/evil', 'w')")
        assert result.error is not None
        out = await run(
            s, "import os\nopen('a.txt','w').write('x'); open('/tmp/b','w').write('y'); print(os.getcwd())"
        )
        assert out.strip() == "/workspace"


async def test_full_workspace_gives_enospc(backend: ZygoteBackend) -> None:
    config = SessionConfig(limits=Limits(workspace_mib=4))
    async with await backend.create_session(config) as s:
        result = await s.execute("open('big', 'wb').write(b'x' * (16 * 1024 * 1024))")
    assert result.error is not None and "No space left" in result.error.message


async def test_host_directories_mount_read_only_and_read_write(
    backend: ZygoteBackend, tmp_path: Path
) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    rw.chmod(0o777)
    (ro / "data.txt").write_text("from host")
    config = SessionConfig(
        mounts=(Mount(source=ro, target="in"), Mount(source=rw, target="/workspace/out", read_only=False))
    )
    async with await backend.create_session(config) as s:
        assert (await run(s, "print(open('in/data.txt').read())")).strip() == "from host"
        result = await s.execute("open('in/new.txt', 'w')")
        assert result.error is not None and "Read-only" in result.error.message
        await run(s, "open('out/result.txt', 'w').write('from sandbox')")
        result = await s.execute("import os\nos.listdir('in/..//../..')")
        assert result.result is not None and "main" not in result.result
    assert (rw / "result.txt").read_text() == "from sandbox"
    assert sorted(p.name for p in ro.iterdir()) == ["data.txt"]


@pytest.mark.parametrize("target", ["..", "../etc", "/etc", "/workspace", "a/../../b"])
async def test_mount_targets_outside_the_workspace_are_refused(
    backend: ZygoteBackend, tmp_path: Path, target: str
) -> None:
    with pytest.raises(ConfigError, match="mount target"):
        await backend.create_session(SessionConfig(mounts=(Mount(source=tmp_path, target=target),)))


async def test_restart_keeps_files_and_loses_variables(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        await run(s, "v = 7\nopen('kept.txt', 'w').write('still here')")
        await s.restart()
        result = await s.execute("v")
        assert result.error is not None and result.error.type == "NameError"
        assert await s.get_file("kept.txt") == b"still here"


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


async def test_closed_session_workspace_and_cgroup_are_removed(backend: ZygoteBackend) -> None:
    s = await backend.create_session()
    await run(s, "open('f', 'w').write('x')")
    sid = s.id
    assert s.process is not None
    name = getattr(s.process, "cgroup_name", None)
    assert (name is None) == (cgroups.layout() is None)
    # the workspaces live in the zygote's mount namespace: seen through its /proc/PID/root
    workspace = f"/proc/{backend.zygote_pid}/root{backend.workspace_dir(sid)}"
    assert _is_dir(workspace)
    await s.close()
    assert not _is_dir(workspace)
    assert name is None or cgroups.existing(name) is None


async def test_hostile_code_gets_a_clear_result_and_the_backend_keeps_serving(backend: ZygoteBackend) -> None:
    cases = {
        "import os\nos._exit(3)": "status 3",
        "import ctypes\nctypes.string_at(0)": "SIGSEGV",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)": "SIGKILL",
    }
    for code, reason in cases.items():
        async with await backend.create_session() as s:
            result = await s.execute(code)
            assert result.killed and not result.state_survived
            assert result.error is not None and reason in result.error.message, result.error
            assert not s.is_alive()
    async with await backend.create_session() as s:
        assert (await s.execute("6 * 7")).result == "42"


async def test_secrets_in_the_engine_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKBOX_TEST_SECRET", "hunter2-secret-value")
    own = await start_backend("zygote")
    assert isinstance(own, ZygoteBackend)
    try:
        async with await own.create_session() as s:
            code = (
                "import os, glob\nfound = [k for k, v in os.environ.items() if 'hunter2' in v]\n"
                "for p in glob.glob('/proc/*/environ'):\n"
                "    try:\n        found += [p] if b'hunter2' in open(p, 'rb').read() else []\n"
                "    except OSError:\n        pass\nprint(found)"
            )
            assert (await run(s, code)).strip() == "[]"
        assert own.zygote_pid is not None
        assert b"hunter2" not in _read_bytes(f"/proc/{own.zygote_pid}/environ")
    finally:
        await own.aclose()


async def test_no_process_outlives_close_and_aclose() -> None:
    before = descendants()
    own = await start_backend("zygote")
    assert isinstance(own, ZygoteBackend)
    sessions = [await own.create_session() for _ in range(3)]
    for s in sessions:
        await run(s, "import subprocess\np = subprocess.Popen(['sleep', '600'])")
    zygote_pid = own.zygote_pid
    assert zygote_pid is not None

    def session_processes() -> int:
        return len(descendants(zygote_pid) - own.idle_pids())

    assert await _settles(lambda: session_processes() == 12)  # 3 x (init, its sleep, interpreter, sleep)
    await sessions[0].close()
    assert await _settles(lambda: session_processes() == 8)
    await own.aclose()
    assert descendants() - before == set()
    assert not own.runtime.exists()
    assert cgroups.remove_stale(lambda name: name.startswith(own.instance)) == []


async def test_start_removes_what_a_crashed_engine_left_behind() -> None:
    stale = "z999999999-dead00"  # an instance whose owner pid cannot exist
    own = ZygoteBackend()
    (own.runtime_root / stale / "ws" / "s1").mkdir(parents=True, exist_ok=True)
    cg = cgroups.Cgroup.create(f"{stale}-s1", Limits()) if cgroups.layout() is not None else None
    foreign = own.runtime_root / "not-ours"
    foreign.mkdir(parents=True, exist_ok=True)
    try:
        await own.start()
        assert not (own.runtime_root / stale).exists()
        assert cgroups.existing(f"{stale}-s1") is None
        assert foreign.exists()
    finally:
        await own.aclose()
        foreign.rmdir()
        if cg is not None and cgroups.existing(cg.name) is not None:
            cg.destroy()


ENGINE_THAT_CRASHES = """
import asyncio, os
from thinkbox.sandbox.zygote.backend import ZygoteBackend

async def main():
    backend = ZygoteBackend()
    session = await backend.create_session()
    await session.execute("import subprocess; subprocess.Popen(['sleep', '300'])")
    asyncio.get_running_loop().create_task(session.execute("while True: pass"))
    await asyncio.sleep(0.3)
    print(backend.zygote_pid, *session.process.host_pids(), flush=True)
    os._exit(0)

asyncio.run(main())
"""


async def test_sessions_die_with_a_crashed_engine() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ENGINE_THAT_CRASHES, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    pids = [int(p) for p in out.split()]
    assert len(pids) == 3  # the zygote, the session's interpreter (busy in a loop) and its sleep
    for _ in range(50):
        if all(_is_zombie(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    assert all(_is_zombie(pid) for pid in pids)


async def test_kill_ends_the_whole_session_and_reports_it(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        await run(s, "import subprocess\np = subprocess.Popen(['sleep', '600'])")
        proc = s.process
        assert proc is not None
        pids = proc.host_pids()
        assert len(pids) == 2
        await proc.kill()
        info = await proc.wait()
        assert info.returncode is not None
        await asyncio.sleep(0.05)
        assert all(_is_zombie(pid) for pid in pids)


async def _settles(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    """True once ``condition()`` holds (the fork server refills its pool of prepared sessions meanwhile)."""
    for _ in range(int(within_s / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _is_zombie(pid: int) -> bool:
    """True also when the process is gone altogether."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_a_dead_zygote_is_reported_and_start_relaunches_it() -> None:
    own = await start_backend("zygote")
    assert isinstance(own, ZygoteBackend)
    try:
        s = await own.create_session()
        assert own.zygote_pid is not None
        os.kill(own.zygote_pid, 9)
        await asyncio.sleep(0.3)  # the backend notices the closed control socket and kills the orphans
        try:
            result = await s.execute("1 + 1")
            assert result.killed and not result.state_survived
        except SessionDead as exc:
            assert "connection" in str(exc)
        assert not s.is_alive()
        async with await own.create_session() as fresh:
            assert (await fresh.execute("1 + 1")).result == "2"
        await s.close()
    finally:
        await own.aclose()


async def test_a_failing_setup_step_names_its_reason(backend: ZygoteBackend, tmp_path: Path) -> None:
    async with await backend.create_session() as s:
        await run(s, "open('clash', 'w').write('a file where a mount should go')")
        s.config = SessionConfig(mounts=(Mount(source=tmp_path, target="clash"),))  # for the restart
        with pytest.raises(SessionStartError, match="sandbox setup failed"):
            await s.restart()


async def test_a_symlink_planted_in_the_workspace_does_not_redirect_a_mount(
    backend: ZygoteBackend, tmp_path: Path
) -> None:
    async with await backend.create_session() as s:
        await run(s, "import os\nos.symlink('/etc', 'data')")
        s.config = SessionConfig(mounts=(Mount(source=tmp_path, target="data/planted"),))
        with pytest.raises(SessionStartError, match="not a plain directory"):
            await s.restart()
    assert not _exists("/etc/planted")


async def test_many_sessions_requested_at_once_all_become_ready(backend: ZygoteBackend) -> None:
    sessions = await asyncio.gather(*(backend.create_session() for _ in range(30)))
    try:
        results = await asyncio.gather(*(s.execute("import os\nos.getuid()") for s in sessions))
        assert len({r.result for r in results}) == 30
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
