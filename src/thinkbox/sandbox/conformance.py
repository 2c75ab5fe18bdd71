"""The behaviours every sandbox backend must have, as a suite that ships in the package.

    results = await run_sandbox_conformance(backend)
    failed = [r for r in results if not r.passed]

Each check opens its own session(s) on the backend, asserts one behaviour of docs/protocol.md and the
session API, and closes what it opened. A check that fails says what it expected and what it got. The same
checks run as individual pytest tests in tests/sandbox/test_conformance.py for every backend that runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkbox.errors import SessionStartError
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import WORKSPACE, ExecutionResult, Limits, Mount, OutputChunk, SessionConfig


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    duration_ms: float = 0.0


class ConformanceError(AssertionError):
    """A backend does not behave as the protocol requires."""


Check = Callable[[SandboxBackend], Awaitable[None]]
CHECKS: dict[str, Check] = {}
"""Check name (the behaviour) -> the check. Names match the tests in tests/sandbox/test_conformance.py."""


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


async def run_sandbox_conformance(
    backend: SandboxBackend, *, only: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run every check (or those named in ``only``) against ``backend``; failures are results, not raised."""
    results = []
    await backend.start()
    for name in only or CHECKS:
        started = time.perf_counter()
        try:
            await CHECKS[name](backend)
        except ConformanceError as exc:
            results.append(CheckResult(name, False, str(exc), (time.perf_counter() - started) * 1000))
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(name, False, detail, (time.perf_counter() - started) * 1000))
        else:
            results.append(CheckResult(name, True, "", (time.perf_counter() - started) * 1000))
    return results


# -- helpers --------------------------------------------------------------------------------------
def expect(condition: bool, what: str, result: ExecutionResult | None = None) -> None:
    """Raise :class:`ConformanceError` saying ``what`` was expected (and what the execution gave)."""
    if not condition:
        if result is not None:
            shown = result.model_dump(exclude={"display"})
            shown["stdout"], shown["stderr"] = shown["stdout"][-500:], shown["stderr"][-500:]
            what = f"{what}; got {shown}"
        raise ConformanceError(what)


@contextlib.asynccontextmanager
async def open_session(backend: SandboxBackend, **limits: Any) -> AsyncIterator[Session]:
    """A fresh session with ``limits`` (fields of :class:`Limits`), closed afterwards."""
    session = await backend.create_session(SessionConfig(limits=Limits(**limits)))
    try:
        yield session
    finally:
        await session.close()


async def run_ok(session: Session, code: str, **kwargs: Any) -> ExecutionResult:
    result = await session.execute(code, **kwargs)
    expect(result.ok, f"{code!r} runs without error", result)
    return result


# -- checks ---------------------------------------------------------------------------------------
@check
async def state_persists_between_executions(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await run_ok(s, "x = 41\nimport math\ndef twice(v):\n    return 2 * v")
        r = await run_ok(s, "x + 1, twice(3), round(math.pi, 2)")
        expect(r.result == "(42, 6, 3.14)", "variables, imports and functions survive between executions", r)


@check
async def value_of_last_expression_is_the_result(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        r = await run_ok(s, "a = 6\na * 7")
        expect(r.result == "42", "the repr of the last expression is the result", r)
        r = await run_ok(s, "b = a")
        expect(r.result is None, "a cell ending in a statement has no result", r)
        r = await run_ok(s, "'text'")
        expect(r.result == "'text'", "the result is the repr()", r)


@check
async def stdout_streams_before_the_execution_ends(backend: SandboxBackend) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    async with open_session(backend) as s:
        first_at = end_at = None
        async for item in s.stream(code):
            if isinstance(item, OutputChunk) and "first" in item.text and first_at is None:
                first_at = time.perf_counter()
            elif isinstance(item, ExecutionResult):
                end_at = time.perf_counter()
                expect(item.stdout == "first\nsecond\n", "the result has the whole stdout", item)
        expect(first_at is not None and end_at is not None, "a 'first' chunk and a result arrived")
        assert first_at is not None and end_at is not None
        expect(
            end_at - first_at > 1.0, f"'first' arrived {end_at - first_at:.2f} s before the end, not ~1.5 s"
        )


@check
async def stderr_is_separate_from_stdout(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        r = await run_ok(s, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)")
        expect(r.stdout == "to out\n" and r.stderr == "to err\n", "stdout and stderr arrive apart", r)


@check
async def exception_is_returned_as_data_and_the_session_stays_usable(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await run_ok(s, "kept = 'yes'")
        r = await s.execute("def inner():\n    raise ValueError('boom')\ninner()")
        err = r.error
        expect(
            err is not None and err.type == "ValueError" and err.message == "boom", "a ValueError('boom')", r
        )
        assert err is not None
        expect("inner()" in err.traceback and "ValueError: boom" in err.traceback, "the user's traceback", r)
        expect(
            "kernel.py" not in err.traceback and "thinkbox" not in err.traceback,
            "no engine frames in the traceback",
            r,
        )
        expect(r.state_survived and not r.killed, "an exception keeps the state", r)
        r = await run_ok(s, "kept")
        expect(r.result == "'yes'", "the session serves after an exception", r)


@check
async def interrupt_stops_the_code_and_keeps_state(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await run_ok(s, "y = 5")
        task = asyncio.create_task(s.execute("while True:\n    pass"))
        await asyncio.sleep(0.5)
        s.interrupt()
        r = await asyncio.wait_for(task, 10)
        expect(
            r.interrupted and r.error is not None and r.error.type == "KeyboardInterrupt", "interrupted", r
        )
        expect(r.state_survived and not r.killed and not r.timed_out, "an interrupt keeps the state", r)
        r = await run_ok(s, "y")
        expect(r.result == "5", "variables survive an interrupt", r)


@check
async def timeout_interrupts_and_says_state_survived(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await run_ok(s, "z = 7")
        r = await s.execute("while True:\n    pass", timeout=1.0)
        expect(
            r.timed_out and r.interrupted and not r.killed and r.state_survived, "timeout -> interrupted", r
        )
        expect(r.error is not None and r.error.type == "TimeoutError", "the error says it timed out", r)
        r = await run_ok(s, "z")
        expect(r.result == "7", "state kept after an interrupted timeout", r)


@check
async def timeout_kills_code_that_ignores_the_interrupt_and_says_state_was_lost(
    backend: SandboxBackend,
) -> None:
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    async with open_session(backend, kill_grace_s=1.0) as s:
        r = await s.execute(code, timeout=1.0)
        expect(r.timed_out and r.killed and not r.state_survived, "timeout -> killed, state lost", r)
        expect(not s.is_alive(), "the session is not alive after the kill")
        await s.restart()
        r = await run_ok(s, "1 + 1")
        expect(r.result == "2", "restart after a kill gives a working interpreter", r)


@check
async def restart_gives_a_fresh_interpreter(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await run_ok(s, "import json\nold = 1")
        await s.restart()
        r = await run_ok(s, "'old' in globals(), 'json' in globals()")
        expect(r.result == "(False, False)", "no variables or imports after restart", r)


@check
async def cwd_is_the_workspace(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        r = await run_ok(s, "import os\nos.getcwd()")
        expect(r.result == repr(WORKSPACE), f"the working directory is {WORKSPACE}", r)


@check
async def start_directory_nested_mounts_and_covers(backend: SandboxBackend) -> None:
    """``SessionConfig.cwd`` inside a mount that lies inside an earlier mount, whose ``hide`` covers a
    folder with an empty read-only directory; a start directory that does not exist fails the start."""
    with tempfile.TemporaryDirectory() as tmp:
        outer, inner = _nested_tree(Path(tmp))
        mounts = (Mount(source=outer, target="t", hide=("hidden",)), Mount(source=inner, target="t/mine"))
        session = await backend.create_session(SessionConfig(mounts=mounts, cwd="t/mine"))
        try:
            code = (
                "import os\nos.getcwd(), os.listdir(), open('../shared.txt').read(), os.listdir('../hidden')"
            )
            r = await run_ok(session, code)
            want = repr(("/workspace/t/mine", ["own.txt"], "shared", []))
            expect(r.result == want, f"cwd, nested mount and cover give {want}", r)
        finally:
            await session.close()
        try:
            session = await backend.create_session(SessionConfig(mounts=mounts, cwd="t/absent"))
        except SessionStartError as exc:
            expect("SessionConfig.cwd" in str(exc), f"the start error names SessionConfig.cwd: {exc}")
        else:
            await session.close()
            raise ConformanceError("a session whose start directory does not exist must not start")


def _nested_tree(tmp: Path) -> tuple[Path, Path]:
    outer, inner = tmp / "outer", tmp / "inner"
    for folder in (outer / "mine", outer / "hidden", inner):
        folder.mkdir(parents=True)
    (outer / "shared.txt").write_text("shared")
    (outer / "hidden" / "secret.txt").write_text("secret")
    (inner / "own.txt").write_text("own")
    for path in (tmp, outer, outer / "hidden", inner, *outer.iterdir(), *inner.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by any session uid
    return outer, inner


@check
async def files_round_trip_including_binary(backend: SandboxBackend) -> None:
    blob = bytes(range(256)) * 40 + b"\x00\xff\xfe"
    async with open_session(backend) as s:
        path = await s.put_file("data/blob.bin", blob)
        expect(path == f"{WORKSPACE}/data/blob.bin", f"put_file returns the path inside ({path!r})")
        expect(await s.get_file("data/blob.bin") == blob, "get_file returns the bytes put_file wrote")
        r = await run_ok(s, "d = open('data/blob.bin', 'rb').read()\nlen(d), d[-3:]")
        expect(r.result == repr((len(blob), blob[-3:])), "the code sees the file put_file wrote", r)
        await run_ok(s, "open('out.bin', 'wb').write(bytes([0, 200, 255]))")
        expect(await s.get_file("out.bin") == bytes([0, 200, 255]), "get_file reads what the code wrote")
        listing = {f.path: f for f in await s.list_files()}
        expect(
            "data/blob.bin" in listing and listing["data/blob.bin"].size == len(blob), f"listing {listing}"
        )
        expect("data" in listing and listing["data"].is_dir, "list_files shows directories")
        try:
            await s.get_file("missing.txt")
        except FileNotFoundError:
            pass
        else:
            raise ConformanceError("get_file of a missing file raises FileNotFoundError")


@check
async def matplotlib_figure_becomes_png_display_data(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        r = await run_ok(s, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')")
        pngs = [d.mime["image/png"] for d in r.display if "image/png" in d.mime]
        expect(len(pngs) == 1, "one image/png display for one open figure", r)
        expect(base64.b64decode(pngs[0]).startswith(b"\x89PNG"), "the image is a base64 PNG")


@check
async def repr_html_object_becomes_html_display_data(backend: SandboxBackend) -> None:
    code = "class Table:\n    def _repr_html_(self):\n        return '<b>hi</b>'\nTable()"
    async with open_session(backend) as s:
        r = await run_ok(s, code)
        expect(any(d.mime.get("text/html") == "<b>hi</b>" for d in r.display), "text/html display data", r)


@check
async def large_output_is_cut_with_a_marker(backend: SandboxBackend) -> None:
    async with open_session(backend, output_bytes=10_000) as s:
        r = await run_ok(s, "print('x' * 300_000)\nprint('END')")
        expect(r.output_truncated, "output_truncated is set", r)
        expect("thinkbox cut" in r.stdout, "a marker says output was cut", r)
        expect(len(r.stdout) < 40_000, f"the kept output is bounded ({len(r.stdout)} chars)", r)
        expect(r.stdout.rstrip().endswith("END"), "the tail of the output is kept", r)
        r = await run_ok(s, "print('small')")
        expect(r.stdout == "small\n" and not r.output_truncated, "the next execution is not cut", r)


@check
async def death_is_reported_and_restart_works(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        r = await s.execute("import os\nos._exit(7)")
        expect(r.killed and not r.state_survived and r.error is not None, "os._exit -> killed result", r)
        expect(not s.is_alive(), "is_alive() is False after the interpreter died")
        await s.restart()
        expect(s.is_alive(), "is_alive() after restart")
        r = await run_ok(s, "1 + 1")
        expect(r.result == "2", "restart after death gives a working interpreter", r)


@check
async def shell_commands_run_in_the_same_sandbox(backend: SandboxBackend) -> None:
    async with open_session(backend) as s:
        await s.put_file("hello.txt", b"hi from the host\n")
        r = await run_ok(s, "!cat hello.txt\nafter = 1")
        expect("hi from the host" in r.stdout, "a '!' line runs a shell command that sees the workspace", r)
        r = await s.shell("pwd; ls; echo made > made.txt")
        expect(r.exit_status == 0 and f"{WORKSPACE}\n" in r.stdout and "hello.txt" in r.stdout, "shell()", r)
        r = await run_ok(s, "open('made.txt').read(), after")
        expect(r.result == "('made\\n', 1)", "the code sees what the shell wrote", r)
        r = await s.shell("exit 3")
        expect(r.exit_status == 3, "shell() reports the exit status", r)


@check
async def memory_limit_gives_memory_error(backend: SandboxBackend) -> None:
    code = "try:\n    big = bytearray(8 * 1024**3)\nexcept MemoryError:\n    print('MemoryError')"
    async with open_session(backend, memory_mib=1024) as s:
        r = await run_ok(s, code)
        expect(r.stdout == "MemoryError\n", "an allocation past the limit raises MemoryError", r)
        r = await run_ok(s, "1 + 1")
        expect(r.result == "2", "the session survives the MemoryError", r)


@check
async def file_size_limit_stops_big_files(backend: SandboxBackend) -> None:
    code = (
        "try:\n    open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))\n"
        "except OSError as e:\n    print('errno', e.errno)"
    )
    async with open_session(backend, file_size_mib=1) as s:
        r = await run_ok(s, code)
        expect(r.stdout == f"errno {errno.EFBIG}\n", "writing past the file-size limit fails with EFBIG", r)


@check
async def workspace_fill_gives_enospc(backend: SandboxBackend) -> None:
    code = (
        "n = 0\ntry:\n    for i in range(64):\n        with open(f'fill{i}', 'wb') as f:\n"
        "            f.write(b'x' * (1024 * 1024))\n        n += 1\n"
        "except OSError as e:\n    print('errno', e.errno, 'after', n)"
    )
    async with open_session(backend, workspace_mib=8) as s:
        r = await run_ok(s, code)
        expect(r.stdout.startswith(f"errno {errno.ENOSPC} "), "filling the workspace ends in ENOSPC", r)
        await run_ok(
            s, "import glob, os\nfor p in glob.glob('fill*'):\n    os.remove(p)\nopen('ok', 'w').write('ok')"
        )


@check
async def no_network(backend: SandboxBackend) -> None:
    code = """
import socket
res = []
for addr in [('1.1.1.1', 53), ('8.8.8.8', 443)]:
    try:
        socket.create_connection(addr, timeout=3).close()
        res.append('connected')
    except OSError as e:
        res.append(type(e).__name__)
try:
    socket.getaddrinfo('example.com', 80)
    res.append('resolved')
except OSError:
    res.append('unresolved')
lines = open('/proc/net/dev').read().splitlines()[2:]
res, sorted(line.split(':')[0].strip() for line in lines)
"""
    async with open_session(backend) as s:
        r = await run_ok(s, code)
        expect(
            "connected" not in (r.result or "") and "'resolved'" not in (r.result or ""), "no route out", r
        )
        expect((r.result or "").endswith("['lo'])"), "only the loopback interface exists", r)
