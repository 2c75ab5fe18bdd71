"""Hostile and broken code on every backend: a clear result each time, the backend keeps serving, no leaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import ExecutionResult, Limits, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _settled(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    for _ in range(int(within_s / 0.1)):
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()


async def _run_hostile(
    backend: SandboxBackend, process_tree: Callable[..., set[int]], code: str, **limits: Any
) -> tuple[ExecutionResult, ExecutionResult | None]:
    """Run ``code`` in a fresh session; return its result and that of a follow-up in the same session
    (None when the session died). Afterwards: a new session works and no process of the session is left.

    The session's processes are its kernel's ``host_pids()`` and everything below them, collected before
    it closes (a backend may keep other processes of its own, like the zygote's spare forks)."""
    session = await backend.create_session(SessionConfig(limits=Limits(**limits)))
    follow_up = None
    owned: set[int] = set()
    try:
        owned |= _session_pids(session, process_tree)
        result = await session.execute(code, timeout=limits.get("timeout_s", 10.0))
        if session.is_alive():
            follow_up = await session.execute("print('still here')\n6 * 7")
        owned |= _session_pids(session, process_tree)
    finally:
        await session.close()
    assert owned, "the backend reports no host pids for its session"
    assert await _settled(lambda: not (owned & process_tree())), f"leaked: {owned & process_tree()}"
    await _serves(backend)
    return result, follow_up


def _session_pids(session: Session, process_tree: Callable[..., set[int]]) -> set[int]:
    proc = session.process
    pids = set(proc.host_pids()) if proc is not None else set()
    for pid in list(pids):
        pids |= process_tree(pid)
    return pids


async def _serves(backend: SandboxBackend) -> None:
    fresh: Session = await backend.create_session()
    try:
        result = await fresh.execute("1 + 1")
        assert result.result == "2", result
    finally:
        await fresh.close()


def _died(result: ExecutionResult, *words: str) -> None:
    assert result.killed and not result.state_survived and result.error is not None, result
    assert all(w in result.error.message for w in words), result.error.message


def _kept(follow_up: ExecutionResult | None) -> None:
    assert follow_up is not None and follow_up.stdout == "still here\n" and follow_up.result == "42", (
        follow_up
    )


async def test_os_exit_is_reported_as_death_with_its_status(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    result, follow_up = await _run_hostile(
        sandbox_backend, process_tree, "print('bye')\nimport os\nos._exit(3)"
    )
    _died(result, "status 3")
    assert follow_up is None


async def test_segfault_through_ctypes_is_reported_as_a_crash(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    result, _ = await _run_hostile(sandbox_backend, process_tree, "import ctypes\nctypes.string_at(0)")
    _died(result, "SIGSEGV")


async def test_closing_sys_stdout_breaks_only_that_execution(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = "import sys\nsys.stdout.close()\nprint('lost')"
    result, follow_up = await _run_hostile(sandbox_backend, process_tree, code)
    assert result.error is not None and result.error.type == "ValueError" and not result.killed, result
    _kept(follow_up)


async def test_closing_fd_1_and_2_breaks_only_that_execution(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = "import os\nos.close(1)\nos.close(2)\nprint('lost')"
    result, follow_up = await _run_hostile(sandbox_backend, process_tree, code)
    assert not result.killed, result
    _kept(follow_up)


async def test_binary_and_invalid_utf8_output_arrive_as_text(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = (
        "import os, sys\nsys.stdout.buffer.write(b'head\\xff\\xfe\\x00\\xc3(tail\\n')\nsys.stdout.flush()\n"
        "os.write(1, bytes(range(256)))\nprint('\\udcff', 'end')"
    )
    result, follow_up = await _run_hostile(sandbox_backend, process_tree, code)
    assert result.ok, result
    assert result.stdout.startswith("head") and "tail" in result.stdout and "end" in result.stdout, result
    assert "\ufffd" in result.stdout, result
    _kept(follow_up)


async def test_infinite_output_is_cut_and_stopped_by_the_timeout(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = "while True:\n    print('spam' * 250)"
    result, follow_up = await _run_hostile(
        sandbox_backend, process_tree, code, timeout_s=2.0, output_bytes=64_000
    )
    assert result.timed_out and result.output_truncated, result.model_dump(exclude={"stdout"})
    assert len(result.stdout) < 200_000
    if result.state_survived:
        _kept(follow_up)


async def test_infinite_output_from_a_shell_command_is_cut(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    result, _ = await _run_hostile(sandbox_backend, process_tree, "!yes", timeout_s=2.0, output_bytes=64_000)
    assert result.timed_out and result.output_truncated, result.model_dump(exclude={"stdout"})
    assert len(result.stdout) < 200_000


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
async def test_signal_that_ends_its_own_interpreter_is_reported(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]], signame: str
) -> None:
    code = f"import os, signal\nos.kill(os.getpid(), signal.{signame})\nimport time\ntime.sleep(5)"
    result, _ = await _run_hostile(sandbox_backend, process_tree, code)
    _died(result, signame)


async def test_sigint_to_itself_is_a_keyboard_interrupt_that_keeps_state(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)"
    result, follow_up = await _run_hostile(sandbox_backend, process_tree, code)
    assert result.error is not None and result.error.type == "KeyboardInterrupt" and result.state_survived, (
        result
    )
    _kept(follow_up)


async def test_sigstop_to_itself_ends_in_a_timeout_kill(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)"
    result, _ = await _run_hostile(sandbox_backend, process_tree, code, timeout_s=1.0, kill_grace_s=1.0)
    assert result.timed_out and result.killed and not result.state_survived, result


async def test_shell_killing_its_own_interpreter_is_reported(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    result, _ = await _run_hostile(sandbox_backend, process_tree, "!kill -9 $PPID; sleep 5")
    _died(result)


async def test_background_processes_left_behind_are_cleaned_up_on_close(
    sandbox_backend: SandboxBackend, process_tree: Callable[..., set[int]]
) -> None:
    code = (
        "import subprocess\nfor _ in range(3):\n"
        "    subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "!nohup sleep 600 >/dev/null 2>&1 &"
    )
    result, follow_up = await _run_hostile(sandbox_backend, process_tree, code)
    assert result.ok, result
    _kept(follow_up)
