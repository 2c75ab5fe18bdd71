"""The seccomp filter is an allow-list inside Docker's default profile: checked as data against that
profile, in a forked process on this machine's kernel, and in real sessions of every backend.

A check that cannot observe what it checks fails: the probes of the filtered process are first run without
the filter, and each refusal must differ from what the kernel answers there.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ctypes
import errno
import json
import os
import random
import secrets
import signal
import socket
from pathlib import Path
from typing import Any

import docker_default_seccomp as docker_default
import pytest
from sandbox_support import descendants

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.confine import seccomp
from thinkbox.sandbox.docker.profile import GVISOR_NAMES, seccomp_profile
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import SessionConfig

ENOSYS, EPERM = errno.ENOSYS, errno.EPERM
AF_VSOCK = 40
CLONE_PARENT = 0x8000
SIGCHLD = int(signal.SIGCHLD)
UNLISTED = {"vmsplice": 278, "fanotify_mark": 301, "process_mrelease": 448}
"""Real x86-64 syscalls Docker allows and the allow-list leaves out: harmless with a bad fd (EBADF)."""
NO_SUCH_SYSCALL = 1000
"""Above every syscall number of today's kernels."""

x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86-64")


# -- the filter as data -----------------------------------------------------------------------------
def _allowed_names(rules: list[seccomp.Rule]) -> set[str]:
    return {rule.name for rule in rules if rule.errno is None}


def test_every_allowed_syscall_is_allowed_by_dockers_default_profile() -> None:
    ours = _allowed_names(seccomp.rules())
    assert set(seccomp.ALLOWED) <= ours and {"clone", "socket", "personality"} <= ours
    extras = sorted(ours - docker_default.ALLOWED_AMD64)
    assert extras == [], (
        f"allowed here but not by Docker's default profile (moby {docker_default.MOBY_COMMIT}): {extras}"
    )
    assert len(ours) < len(docker_default.ALLOWED_AMD64)


def test_allow_list_and_refusals_are_disjoint_and_cover_the_dangerous_calls() -> None:
    assert len(set(seccomp.ALLOWED)) == len(seccomp.ALLOWED)
    assert not set(seccomp.ALLOWED) & set(seccomp.DENIED)
    assert not set(seccomp.ALLOWED) & {"clone", "clone3", "socket", "personality"}
    for name in ("io_uring_setup", "ptrace", "bpf", "unshare", "setns", "mount", "keyctl", "userfaultfd"):
        assert name in seccomp.DENIED
    # every name of the filter is a syscall of this architecture, except 32-bit ones refused anyway
    assert set(seccomp.unknown_syscalls()) <= set(seccomp.DENIED)
    if os.uname().machine == "x86_64":
        assert "vm86" in seccomp.unknown_syscalls()  # i386 only: the list means something


def _outcome(
    rules: list[tuple[str, int | None, list[tuple[int, str, int, int]]]], call: str, *args: int
) -> Any:
    """What a libseccomp filter (or Docker's profile, through runc) answers: the action of the matching
    rules, which must agree (libseccomp orders none), else the default (ENOSYS)."""
    argv = [*args, 0, 0, 0, 0, 0, 0][:6]
    found = set()
    for name, err, conditions in rules:
        if name != call:
            continue
        ok = True
        for index, op, value, two in conditions:
            arg = argv[index]
            if op == "SCMP_CMP_MASKED_EQ":
                ok = ok and (arg & value) == two
            elif op == "SCMP_CMP_EQ":
                ok = ok and arg == value
            elif op == "SCMP_CMP_NE":
                ok = ok and arg != value
            else:
                raise AssertionError(f"op {op} not modelled")
        if ok:
            found.add("allow" if err is None else err)
    assert len(found) <= 1, f"{call}{args}: rules with different outcomes overlap: {found}"
    return found.pop() if found else ENOSYS


def _from_rules() -> list[tuple[str, int | None, list[tuple[int, str, int, int]]]]:
    return [
        (r.name, r.errno, [(i, "SCMP_CMP_MASKED_EQ", m, v) for i, m, v in r.args]) for r in seccomp.rules()
    ]


def _from_profile(profile: dict[str, Any]) -> list[tuple[str, int | None, list[tuple[int, str, int, int]]]]:
    out = []
    for entry in profile["syscalls"]:
        err = None if entry["action"] == "SCMP_ACT_ALLOW" else entry["errnoRet"]
        args = [(a["index"], a["op"], a["value"], a.get("valueTwo", 0)) for a in entry.get("args") or []]
        out += [(name, err, args) for name in entry["names"]]
    return out


CASES: list[tuple[str, tuple[int, ...], Any]] = [
    ("clone", (SIGCHLD,), "allow"),
    ("clone", (0x003D0F00,), "allow"),  # glibc's pthread_create flags
    ("clone", (CLONE_PARENT | SIGCHLD,), EPERM),
    ("clone", (0x10000000 | SIGCHLD,), EPERM),  # CLONE_NEWUSER
    ("clone", (0x40000000,), EPERM),  # CLONE_NEWNET
    ("clone3", (0,), ENOSYS),
    ("personality", (0,), "allow"),
    ("personality", (0xFFFFFFFF,), "allow"),
    ("personality", (0x0040000,), EPERM),  # ADDR_NO_RANDOMIZE
    ("personality", (0x0008,), EPERM),  # PER_LINUX32
    ("personality", (0x1_0004_0000,), EPERM),  # the kernel reads the low 32 bits only
    ("socket", (socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC), "allow"),
    ("socket", (socket.AF_INET, socket.SOCK_DGRAM), "allow"),
    ("socket", (socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK), "allow"),
    ("socket", (socket.AF_UNIX, socket.SOCK_SEQPACKET), "allow"),
    ("socket", (AF_VSOCK, socket.SOCK_STREAM), EPERM),
    ("socket", (0x1_0000_0000 | AF_VSOCK, socket.SOCK_STREAM), EPERM),
    ("socket", (socket.AF_NETLINK, socket.SOCK_RAW), EPERM),
    ("socket", (socket.AF_NETLINK, socket.SOCK_DGRAM), EPERM),
    ("socket", (socket.AF_PACKET, socket.SOCK_DGRAM), EPERM),
    ("socket", (socket.AF_INET, socket.SOCK_RAW), EPERM),
    ("socket", (socket.AF_INET, 10), EPERM),  # SOCK_PACKET
    ("socket", (31, socket.SOCK_STREAM), ENOSYS),  # AF_BLUETOOTH: not in the allow-list
    ("socket", (38, socket.SOCK_SEQPACKET), ENOSYS),  # AF_ALG
    ("socket", (socket.AF_INET, 6), ENOSYS),  # SOCK_DCCP
    ("mount", (0,), EPERM),
    ("io_uring_setup", (1,), EPERM),
    ("getpid", (), "allow"),
    ("mq_open", (0,), ENOSYS),
    ("nonexistent", (), ENOSYS),
]


@pytest.mark.parametrize("source", ["rules", "docker profile"])
def test_argument_conditions_give_one_outcome_each(source: str) -> None:
    rules = _from_rules() if source == "rules" else _from_profile(seccomp_profile())
    for call, args, expected in CASES:
        assert _outcome(rules, call, *args) == expected, (call, args)
    rng = random.Random(7)  # overlaps of different outcomes, on random arguments
    samples = [0, 0xFFFFFFFF, 1 << 32, 1 << 63] + [
        rng.getrandbits(rng.choice((4, 8, 16, 32, 64))) for _ in range(400)
    ]
    for call in ("clone", "socket", "personality"):
        for a in samples:
            _outcome(rules, call, a, rng.choice(samples))


def test_docker_profile_is_the_allow_list() -> None:
    profile = seccomp_profile()
    json.dumps(profile)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == ENOSYS
    rules = _from_profile(profile)
    allowed = {name for name, err, _ in rules if err is None}
    gvisor = set(GVISOR_NAMES.values())  # the same syscalls by gVisor's names (pselect: pselect6)
    assert allowed == _allowed_names(seccomp.rules()) - set(seccomp.unknown_syscalls()) | gvisor
    assert allowed - gvisor <= docker_default.ALLOWED_AMD64
    assert {GVISOR_NAMES[name] for name in seccomp.ALLOWED if name in GVISOR_NAMES} == gvisor
    refused = {name for name, err, args in rules if err == EPERM and not args}
    assert refused == set(seccomp.DENIED) - set(seccomp.unknown_syscalls())
    for entry in profile["syscalls"]:
        for arg in entry.get("args") or []:
            assert set(arg) == {"index", "value", "valueTwo", "op"} and arg["op"] == "SCMP_CMP_MASKED_EQ"
            assert len({a["index"] for a in entry["args"]}) == len(
                entry["args"]
            )  # one comparison per argument
    # gVisor: clone3 reaches its own kernel, the only name outside Docker's unconditional set
    runsc = {name for name, err, _ in _from_profile(seccomp_profile(clone3_rule=False)) if err is None}
    assert runsc - allowed == {"clone3"}


# -- the filter in a forked process ---------------------------------------------------------------
def _probes(filtered: bool) -> dict[str, Any]:
    """Run the probes in a grandchild (with or without the filter) whose own child reaps everything it
    starts: a clone(CLONE_PARENT) that got through makes a sibling of the prober, never of pytest."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reaper
        code = 1
        try:
            os.close(read_fd)
            prober = os.fork()
            if prober == 0:
                _probe_and_report(write_fd, filtered)
            os.close(write_fd)
            while True:
                try:
                    os.wait()
                except ChildProcessError:
                    break
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert data, "the probing process reported nothing (killed by the filter?)"
    report: dict[str, Any] = ast.literal_eval(data.decode())
    return report


def _probe_and_report(fd: int, filtered: bool) -> None:
    out: dict[str, Any] = {}
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long

        def call(nr: int, *args: int) -> Any:
            ctypes.set_errno(0)
            rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
            if rc == 0 and nr == 56:  # a clone that got through: the new process leaves at once
                os._exit(0)
            if rc > 0 and nr == 56:
                with contextlib.suppress(ChildProcessError):  # not ours with CLONE_PARENT
                    os.waitpid(rc, 0)
            if rc >= 0 and nr == 41:
                os.close(rc)
            return "ok" if rc >= 0 else ctypes.get_errno()

        if filtered:
            seccomp.load_program(seccomp.compile_program())
        with open("/proc/self/status") as f:
            out["seccomp mode"] = next(line.split()[1] for line in f if line.startswith("Seccomp:"))
        out["getpid"] = "ok" if call(39) == "ok" else "failed"
        out["no such syscall"] = call(NO_SUCH_SYSCALL)
        for name, nr in UNLISTED.items():
            out[name] = call(nr, 2**32 - 1, 0, 0, 0)  # fd -1 (an int: low 32 bits)
        out["openat2"] = call(437, 2**32 - 100, 0, 0, 0)  # AT_FDCWD, NULL how: EFAULT when allowed
        out["clone3"] = call(435, 0, 0)
        out["clone(CLONE_PARENT)"] = call(56, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
        out["clone(CLONE_NEWUSER)"] = call(56, 0x10000000 | SIGCHLD, 0, 0, 0, 0)
        out["unshare(CLONE_NEWUTS)"] = call(272, 0x04000000)
        out["personality(query)"] = call(135, 0xFFFFFFFF)
        out["personality(ADDR_NO_RANDOMIZE)"] = call(135, 0x0040000)
        out["socket(AF_VSOCK)"] = call(41, AF_VSOCK, socket.SOCK_STREAM, 0)
        out["socket(AF_VSOCK), high bits set"] = call(41, (1 << 32) | AF_VSOCK, socket.SOCK_STREAM, 0)
        out["socket(AF_NETLINK)"] = call(41, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        out["socket(AF_INET, SOCK_RAW)"] = call(41, socket.AF_INET, socket.SOCK_RAW, 1)
        out["socket(AF_INET, SOCK_STREAM)"] = call(41, socket.AF_INET, socket.SOCK_STREAM, 0)
        out["socket(AF_INET6, SOCK_DGRAM)"] = call(41, socket.AF_INET6, socket.SOCK_DGRAM, 0)
        out["socket(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC)"] = call(
            41, socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC, 0
        )
        child = os.fork()
        if child == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        import threading

        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join()
        out["thread"] = "ok" if seen and seen[0] != threading.get_native_id() else "failed"
    except BaseException as exc:
        out["error"] = repr(exc)
    finally:
        os.write(fd, repr(out).encode())
        os._exit(0)


# what the filter answers, and whether the kernel alone answers something else (None: not required)
EXPECTED_IN_FORK: dict[str, tuple[Any, bool]] = {
    "seccomp mode": ("2", True),
    "getpid": ("ok", False),
    "no such syscall": (ENOSYS, False),  # ENOSYS with or without a filter: the filter's part is below
    **{name: (ENOSYS, True) for name in UNLISTED},
    "openat2": (ENOSYS, True),
    "clone3": (ENOSYS, True),
    "clone(CLONE_PARENT)": (EPERM, True),
    "clone(CLONE_NEWUSER)": (EPERM, os.geteuid() == 0),
    "unshare(CLONE_NEWUTS)": (EPERM, os.geteuid() == 0),
    "personality(query)": ("ok", False),
    "personality(ADDR_NO_RANDOMIZE)": (EPERM, True),
    "socket(AF_VSOCK)": (EPERM, True),
    "socket(AF_VSOCK), high bits set": (EPERM, True),
    "socket(AF_NETLINK)": (EPERM, os.geteuid() == 0),
    "socket(AF_INET, SOCK_RAW)": (EPERM, os.geteuid() == 0),
    "socket(AF_INET, SOCK_STREAM)": ("ok", False),
    "socket(AF_INET6, SOCK_DGRAM)": ("ok", False),
    "socket(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC)": ("ok", False),
    "fork": (7, False),
    "thread": ("ok", False),
}


@x86_64_only
def test_filter_in_a_forked_process_refuses_unlisted_calls_and_runs_ordinary_ones() -> None:
    baseline = _probes(filtered=False)
    report = _probes(filtered=True)
    assert "error" not in baseline and "error" not in report, (baseline, report)
    wrong = {name: (report.get(name), expected) for name, (expected, _) in EXPECTED_IN_FORK.items()}
    assert {k: v for k, v in wrong.items() if v[0] != v[1]} == {}, report
    blind = [
        name
        for name, (expected, observable) in EXPECTED_IN_FORK.items()
        if observable and baseline[name] == expected
    ]
    assert blind == [], f"without the filter the kernel answers the same, so these prove nothing: {blind}"


# -- real sessions, every backend -----------------------------------------------------------------
LIBC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return 'ok' if rc >= 0 else ctypes.get_errno()
"""


async def _report(session: Session, code: str, **kwargs: Any) -> Any:
    """Run ``code`` whose last expression is a literal report; return that report."""
    result = await session.execute(code, **kwargs)
    assert result.ok and result.result is not None, result
    return ast.literal_eval(result.result)


def _unlisted_errnos(backend: SandboxBackend) -> set[int]:
    # gVisor (runsc 2022) answers every errno of a Docker profile as EPERM (see docker_backend)
    return {ENOSYS, EPERM} if backend.info().name.endswith("runsc") else {ENOSYS}


def _host_unlisted_errnos() -> dict[str, int]:
    """What this machine's kernel answers to the unlisted probes, without a filter (0: success)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    for name, nr in UNLISTED.items():
        ctypes.set_errno(0)
        rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in (2**32 - 1, 0, 0, 0)))
        out[name] = 0 if rc >= 0 else ctypes.get_errno()
    return out


@pytest.mark.escape
@pytest.mark.asyncio(loop_scope="module")
@x86_64_only
async def test_vsock_sockets_are_refused_with_eperm(sandbox_backend: SandboxBackend) -> None:
    code = (
        LIBC
        + """
import socket
out = {}
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    out['socket module'] = 'created'
except OSError as e:
    out['socket module'] = e.errno
out['raw syscall, family with high bits'] = call(41, (1 << 32) | 40, 1, 0)
out['SOCK_DGRAM'] = call(41, 40, 2, 0)
out
"""
    )
    async with await sandbox_backend.create_session(SessionConfig()) as session:
        report = await _report(session, code)
    assert report == dict.fromkeys(report, EPERM) and len(report) == 3, report


@pytest.mark.escape
@pytest.mark.asyncio(loop_scope="module")
@x86_64_only
async def test_clone_parent_is_refused_and_no_process_escapes_the_session(
    sandbox_backend: SandboxBackend,
) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.75"
    code = (
        LIBC
        + f"""
rc = libc.syscall(56, ctypes.c_ulong({CLONE_PARENT | SIGCHLD}), 0, 0, 0, 0)
if rc == 0:  # got through: become a marked process for the host to find
    try:
        os.execvp('sleep', ['sleep', {marker!r}])
    finally:
        os._exit(0)
(rc, ctypes.get_errno())
"""
    )
    zygote = getattr(sandbox_backend, "zygote_pid", None)
    zygote = zygote() if callable(zygote) else zygote
    async with await sandbox_backend.create_session(SessionConfig()) as session:
        report = await _report(session, code)
        await asyncio.sleep(0.3)
        marked = _marked(marker)
        below_zygote = sorted(marked & descendants(zygote)) if zygote else []
    for pid in marked:
        with contextlib.suppress(ProcessLookupError):  # gone with its session
            os.kill(pid, signal.SIGKILL)
    assert report == (-1, EPERM), report
    assert below_zygote == [] and marked == set(), f"clone(CLONE_PARENT) made processes {sorted(marked)}"


def _marked(marker: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.escape
@pytest.mark.asyncio(loop_scope="module")
@x86_64_only
async def test_unknown_and_unlisted_syscalls_give_enosys(sandbox_backend: SandboxBackend) -> None:
    baseline = _host_unlisted_errnos()
    assert ENOSYS not in baseline.values(), (
        f"the host kernel lacks a probe, which then proves nothing: {baseline}"
    )
    code = LIBC + f"out = {{name: call(nr, 2**32 - 1, 0, 0) for name, nr in {UNLISTED!r}.items()}}\n"
    code += f"out['no such syscall'] = call({NO_SUCH_SYSCALL})\nout['clone3'] = call(435, 0, 0)\nout"
    async with await sandbox_backend.create_session(SessionConfig()) as session:
        report = await _report(session, code)
    expected = _unlisted_errnos(sandbox_backend)
    assert set(report) == {*UNLISTED, "no such syscall", "clone3"}
    assert all(value in expected for value in report.values()), report


ORDINARY_WORK = """
import multiprocessing, os, socket, subprocess, threading
out = {}
out['subprocess'] = subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout.strip()
open('seccomp-probe.txt', 'w').close()
out['shell pipeline'] = subprocess.run(
    'ls | sort | grep -c seccomp-probe', shell=True, capture_output=True, text=True
).stdout.strip()
ids = []
threads = [threading.Thread(target=lambda: ids.append(threading.get_native_id())) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out['threads'] = len(set(ids))
import numpy as np
out['numpy'] = float((np.linalg.inv(np.eye(64) * 2) @ np.ones(64)).sum())
import pandas as pd
df = pd.DataFrame({'k': list('abab'), 'v': [1, 2, 3, 4]})
out['pandas'] = df.groupby('k').v.sum().to_dict()
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [1, 4, 9])
fig.savefig('/tmp/plot.png')
plt.close(fig)
out['matplotlib png'] = open('/tmp/plot.png', 'rb').read(8) == b'\\x89PNG\\r\\n\\x1a\\n'
with multiprocessing.Pool(2) as pool:
    out['pool'] = pool.map(abs, [-1, -2, -3])
a, b = socket.socketpair()
a.sendall(b'x')
out['unix pair'] = b.recv(1)
a.close(); b.close()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(('127.0.0.1', 0))
srv.listen()
out['inet bind'] = srv.getsockname()[0]
srv.close()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.close()
out
"""


@pytest.mark.escape
@pytest.mark.asyncio(loop_scope="module")
async def test_ordinary_work_still_runs(sandbox_backend: SandboxBackend) -> None:
    async with await sandbox_backend.create_session(SessionConfig()) as session:
        report = await _report(session, ORDINARY_WORK, timeout=180)
        shell = await session.execute("!ls")
    assert report == {
        "subprocess": "hi",
        "shell pipeline": "1",
        "threads": 4,
        "numpy": 32.0,
        "pandas": {"a": 4, "b": 6},
        "matplotlib png": True,
        "pool": [1, 2, 3],
        "unix pair": b"x",
        "inet bind": "127.0.0.1",
    }, report
    assert shell.error is None and "seccomp-probe.txt" in shell.stdout.split(), shell
