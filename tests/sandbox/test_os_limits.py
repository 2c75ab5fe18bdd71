"""OS limits of a session (seccomp, rlimits, cgroups), exercised for real in zygote sessions and directly."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sandbox_support import start_backend

from thinkbox.sandbox.confine import cgroups, rlimits, seccomp
from thinkbox.sandbox.types import Limits, MiB, SessionConfig
from thinkbox.sandbox.zygote.backend import ZygoteBackend, ZygoteKernel

in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[ZygoteBackend]:
    started = await start_backend("zygote")
    assert isinstance(started, ZygoteBackend)
    try:
        yield started
    finally:
        await started.aclose()


SYSCALL_ATTEMPTS = {
    "unshare(CLONE_NEWUSER)": "libc.unshare(0x10000000)",
    "unshare(CLONE_NEWNS)": "libc.unshare(0x00020000)",
    "mount": "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
    "ptrace(PTRACE_ATTACH, 1)": "libc.ptrace(16, 1, None, None)",
    "keyctl": "libc.syscall(250, 0, 0, 0, 0, 0)",
    "add_key": "libc.syscall(248, b'user', b'x', b'y', 1, -2)",
    "bpf": "libc.syscall(321, 0, None, 0)",
    "io_uring_setup": "libc.syscall(425, 1, None)",
    "perf_event_open": "libc.syscall(298, None, 0, -1, -1, 0)",
    "clone(CLONE_NEWPID)": "libc.syscall(56, 0x20000000 | 17, 0, 0, 0, 0)",
    "personality(ADDR_NO_RANDOMIZE)": "libc.personality(0x0040000)",
    "setns": "libc.setns(0, 0)",
}


@in_module_loop
@pytest.mark.parametrize("name", sorted(SYSCALL_ATTEMPTS))
async def test_seccomp_refuses_dangerous_syscalls_with_eperm(backend: ZygoteBackend, name: str) -> None:
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"rc = {SYSCALL_ATTEMPTS[name]}\n(rc, ctypes.get_errno())"
    )
    async with await backend.create_session() as s:
        result = await s.execute(code)
    assert result.error is None, result.error
    assert result.result == f"(-1, {errno.EPERM})", f"{name}: {result.result}"


@in_module_loop
@pytest.mark.parametrize(
    "family_type",
    [
        "socket.AF_NETLINK, socket.SOCK_RAW",
        "socket.AF_PACKET, socket.SOCK_DGRAM",
        "socket.AF_INET, socket.SOCK_RAW",
    ],
)
async def test_raw_and_netlink_sockets_give_permission_error(
    backend: ZygoteBackend, family_type: str
) -> None:
    async with await backend.create_session() as s:
        result = await s.execute(f"import socket\nsocket.socket({family_type})")
        assert result.error is not None and result.error.type == "PermissionError"
        ok = await s.execute("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n'ok'")
        assert ok.result == "'ok'"


@in_module_loop
async def test_setuid_and_setgid_bits_are_refused(backend: ZygoteBackend) -> None:
    code = (
        "import os\nopen('f', 'w').close()\nout = []\n"
        "for mode in (0o4755, 0o2755, 0o755):\n"
        "    try:\n        os.chmod('f', mode)\n        out.append('ok')\n"
        "    except PermissionError:\n        out.append('EPERM')\nout"
    )
    async with await backend.create_session() as s:
        result = await s.execute(code)
    assert result.result == "['EPERM', 'EPERM', 'ok']", result


@in_module_loop
async def test_clone3_answers_enosys_so_threads_and_subprocesses_still_work(backend: ZygoteBackend) -> None:
    code = (
        "import ctypes, subprocess, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.syscall(435, None, 0)\nerr = ctypes.get_errno()\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "(rc, err, subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout)"
    )
    async with await backend.create_session() as s:
        result = await s.execute(code)
    assert result.result == f"(-1, {errno.ENOSYS}, 'hi\\n')"


@in_module_loop
async def test_rlimits_of_the_session_match_its_limits(backend: ZygoteBackend) -> None:
    limits = Limits(memory_mib=512, cpu_time_s=100, processes=20, open_files=64, file_size_mib=8)
    code = (
        "import resource as r\n[r.getrlimit(x)[0] for x in (r.RLIMIT_AS, r.RLIMIT_CPU, r.RLIMIT_NPROC,"
        " r.RLIMIT_NOFILE, r.RLIMIT_FSIZE, r.RLIMIT_CORE)]"
    )
    async with await backend.create_session(SessionConfig(limits=limits)) as s:
        result = await s.execute(code)
    assert result.result == str([512 * MiB, 100, 20, 64, 8 * MiB, 0])


@in_module_loop
async def test_memory_bomb_raises_memory_error_and_the_session_survives(backend: ZygoteBackend) -> None:
    async with await backend.create_session(SessionConfig(limits=Limits(memory_mib=768))) as s:
        await s.execute("kept = 'state'")
        result = await s.execute("bomb = bytearray(4 * 1024 ** 3)")
        assert result.error is not None and result.error.type == "MemoryError"
        assert (await s.execute("kept")).result == "'state'"


@in_module_loop
async def test_fork_bomb_is_contained(backend: ZygoteBackend) -> None:
    code = (
        "import os, time\nkids = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        kids.append(pid)\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno)\n"
        "len(kids)"
    )
    async with await backend.create_session(SessionConfig(limits=Limits(processes=16))) as s:
        result = await s.execute(code)
        assert result.error is None, result.error
        assert result.result is not None and int(result.result) < 16
        assert "stopped 11" in result.stdout  # EAGAIN
        assert (await s.execute("1 + 1")).result == "2"


@in_module_loop
async def test_cpu_loop_past_the_timeout_is_interrupted_and_state_kept(backend: ZygoteBackend) -> None:
    async with await backend.create_session() as s:
        await s.execute("kept = 1")
        started = time.perf_counter()
        result = await s.execute("while True:\n    pass", timeout=1.0)
        assert time.perf_counter() - started < 5
        assert result.timed_out and result.interrupted and result.state_survived
        assert (await s.execute("kept")).result == "1"


@in_module_loop
async def test_file_size_limit_gives_file_too_large(backend: ZygoteBackend) -> None:
    async with await backend.create_session(SessionConfig(limits=Limits(file_size_mib=2))) as s:
        result = await s.execute("open('f', 'wb').write(b'x' * (4 * 1024 * 1024))")
        assert result.error is not None and "too large" in result.error.message
        assert (await s.execute("import os\nos.path.getsize('f')")).result == str(2 * MiB)


@in_module_loop
async def test_session_cgroup_carries_the_limits(backend: ZygoteBackend) -> None:
    layout = cgroups.layout()
    if layout is None:
        pytest.skip(f"cgroups are not usable here: {cgroups.unavailable_reason()}")
    limits = Limits(memory_mib=300, processes=33, cpu_cores=0.5)
    async with await backend.create_session(SessionConfig(limits=limits)) as s:
        proc = s.process
        assert isinstance(proc, ZygoteKernel) and proc.cgroup_name is not None
        cg = cgroups.existing(proc.cgroup_name)
        assert cg is not None
        assert set(proc.host_pids()) <= set(cg.pids())
        if layout.version == 1:
            values = {p.parent.parent.name: p for p in cg.dirs}
            assert _read(values["memory"] / "memory.limit_in_bytes") == str((300 + 256) * MiB)
            assert _read(values["pids"] / "pids.max") == "33"
            assert _read(values["cpu"] / "cpu.cfs_quota_us") == "50000"
        else:
            assert _read(cg.dirs[0] / "pids.max") == "33"


def _read(path: os.PathLike[str]) -> str:
    with open(path) as f:
        return f.read().strip()


def test_seccomp_filter_loads_in_a_plain_process_and_exports_bpf() -> None:
    with tempfile.TemporaryFile() as f:
        seccomp.export_bpf(f)
        assert f.tell() > 0 and f.tell() % 8 == 0
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            seccomp.load()
            results = [libc.unshare(0x10000000), ctypes.get_errno(), libc.personality(0xFFFFFFFF)]
            os.write(write_fd, repr(results).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as r:
        assert r.read() == f"[-1, {errno.EPERM}, 0]"


def test_rlimits_apply_sets_soft_and_hard_limits() -> None:
    limits = Limits(open_files=100, file_size_mib=3)
    pid = os.fork()
    if pid == 0:
        import resource

        code = 1
        try:
            rlimits.apply(limits)
            ok = resource.getrlimit(resource.RLIMIT_NOFILE) == (100, 100)
            ok = ok and resource.getrlimit(resource.RLIMIT_FSIZE) == (3 * MiB, 3 * MiB)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_cgroup_kill_all_empties_it_and_destroy_removes_it() -> None:
    if cgroups.layout() is None:
        pytest.skip(f"cgroups are not usable here: {cgroups.unavailable_reason()}")
    name = f"test-{os.getpid()}"
    cg = cgroups.Cgroup.create(name, Limits(processes=8))
    assert cg is not None
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    cg.add(pid)
    assert cg.pids() == [pid]
    cg.kill_all()
    assert cg.pids() == []
    os.waitpid(pid, 0)
    cg.destroy()
    assert cgroups.existing(name) is None
