"""The host enforces the output limits itself: code that bypasses the in-sandbox output pump and writes raw
frames to its own protocol socket gets no more through than the limits allow, and never makes the host
buffer a frame larger than the request may legitimately produce.

The code reaches the socket through the kernel object (``thinkbox.sandbox.inside.kernel._ACTIVE``) and writes
frames with the current request's id, under the channel's lock so that its frames are not interleaved
with the pump's.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.frames import ERROR_CHARS, NAME_CHARS, RESULT_CHARS, TAIL_BYTES
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import DisplayData, ExecutionResult, Limits, OutputChunk, SessionConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

MiB = 1024 * 1024
LIMIT = 100_000  # output_bytes of these sessions
MARKER = re.compile(r"\n\[\.\.\. thinkbox cut (\d+) bytes of output here \(limit \d+\) \.\.\.\]\n")

RAW = """
import json, struct
import thinkbox.sandbox.inside.kernel as _k
_ch = _k._ACTIVE.channel
_rid = _k._ACTIVE.current_id

def raw(payload, announce=None, pieces=()):
    with _ch.lock:
        _ch.sock.sendall(struct.pack('>I', len(payload) if announce is None else announce) + payload)
        for piece in pieces:
            _ch.sock.sendall(piece)

def frame(**msg):
    raw(json.dumps({'id': _rid, **msg}, separators=(',', ':')).encode())
"""


@pytest_asyncio.fixture(loop_scope="module")
async def session(sandbox_backend: SandboxBackend) -> AsyncIterator[Session]:
    s = await sandbox_backend.create_session(SessionConfig(limits=Limits(output_bytes=LIMIT, timeout_s=30)))
    try:
        yield s
    finally:
        await s.close()


async def _run(session: Session, code: str, **kw: Any) -> tuple[ExecutionResult, list[OutputChunk]]:
    """The result of ``code`` (RAW is prepended) and the chunks streamed while it ran."""
    chunks: list[OutputChunk] = []
    result: ExecutionResult | None = None
    async for item in session.stream(RAW + code, **kw):
        if isinstance(item, OutputChunk):
            chunks.append(item)
        elif isinstance(item, ExecutionResult):
            result = item
    assert result is not None
    return result, chunks


async def _still_works(session: Session) -> None:
    result = await session.execute("print('still here')\n6 * 7")
    assert result.ok and result.stdout == "still here\n" and result.result == "42", result
    assert not result.output_truncated and result.display_dropped == 0, result


def _bounded(text: str) -> None:
    """At most the limit, one marker and a tail of TAIL_BYTES."""
    m = MARKER.search(text)
    assert m is not None, text[-300:]
    assert len(text[: m.start()].encode()) <= LIMIT
    assert len(text[m.end() :].encode()) <= TAIL_BYTES


@contextlib.contextmanager
def _peak_rss_growth() -> Iterator[list[int]]:
    """Bytes by which this process's peak RSS rose inside the block (the peak is reset on entry)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS here: {exc}")
    before = _status_kib("VmRSS")
    growth: list[int] = []
    yield growth
    growth.append((_status_kib("VmHWM") - before) * 1024)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/self/status")


@pytest.mark.parametrize(
    ("frames", "size"), [(1, LIMIT * 3 // 2), (16, LIMIT * 10 // 16)], ids=["1.5x-one-frame", "10x-16-frames"]
)
async def test_stream_text_past_the_limit_is_cut_by_the_host(
    session: Session, frames: int, size: int
) -> None:
    code = f"for i in range({frames}):\n    frame(type='stream', name='stdout', text='a' * {size})\n"
    result, chunks = await _run(session, code)
    assert result.ok, result.error
    assert result.output_truncated
    _bounded(result.stdout)
    cut = int(MARKER.search(result.stdout).group(1))  # type: ignore[union-attr]
    assert cut == frames * size - LIMIT
    assert sum(len(c.text.encode()) for c in chunks) <= LIMIT  # nothing past the limit was streamed either
    await _still_works(session)


async def test_stderr_and_stdout_share_the_limit_and_keep_a_tail(session: Session) -> None:
    code = (
        f"frame(type='stream', name='stderr', text='e' * {LIMIT - 10})\n"
        f"frame(type='stream', name='stdout', text='o' * {LIMIT} + 'THE END')\n"
    )
    result, _ = await _run(session, code)
    assert result.output_truncated
    assert result.stderr == "e" * (LIMIT - 10)
    assert result.stdout.startswith("o" * 10 + "\n[... thinkbox cut")
    assert result.stdout.endswith("THE END") and len(result.stdout) < 10 + 200 + TAIL_BYTES
    await _still_works(session)


async def test_many_display_items_are_capped_and_reported(session: Session) -> None:
    code = "for i in range(200):\n    frame(type='display', mime={'image/png': 'iVBORw0K' * 100})\n"
    result, _ = await _run(session, code)
    cap = Limits().display_items
    assert len(result.display) == cap
    assert result.display_dropped == 200 - cap
    assert f"thinkbox dropped {200 - cap} display item" in result.stderr
    await _still_works(session)


async def test_display_bytes_bound_the_items_of_one_execution(sandbox_backend: SandboxBackend) -> None:
    limits = Limits(display_bytes=1 * MiB)
    async with await sandbox_backend.create_session(SessionConfig(limits=limits)) as s:
        code = (
            "for i in range(3):\n    frame(type='display', mime={'text/plain': 'p' * 400_000})\n"
            "frame(type='display', mime={'text/plain': 'q' * 1_500_000})\n"  # read, then over the budget
            "frame(type='display', mime={'text/plain': 'small'})\n"
        )
        result, _ = await _run(s, code)
        assert [len(d.mime["text/plain"]) for d in result.display] == [400_000, 400_000, 5]
        assert result.display_dropped == 2
        await _still_works(s)


async def test_a_huge_display_item_is_dropped_without_being_buffered(session: Session) -> None:
    code = (
        "msg = {'id': _rid, 'type': 'display', 'mime': {'image/png': 'A' * (20 << 20)}}\n"
        "payload = json.dumps(msg, separators=(',', ':')).encode()\n"
        "raw(payload)\n"
        "del msg, payload\n"
        "frame(type='display', mime={'text/plain': 'after'})\n"
        "print('in step')\n"
    )
    with _peak_rss_growth() as growth:
        result, _ = await _run(session, code)
    assert result.display_dropped == 1, result.stderr
    assert [d.mime for d in result.display] == [{"text/plain": "after"}]
    assert result.stdout == "in step\n"  # the connection kept its framing
    assert growth[0] < 12 * MiB, f"the host's peak RSS grew by {growth[0] / MiB:.0f} MiB"
    await _still_works(session)


async def test_a_90_mib_frame_is_discarded_in_pieces(session: Session) -> None:
    size = 90 * MiB
    code = (
        "head = json.dumps({'id': _rid, 'type': 'stream', 'name': 'stdout'}, separators=(',', ':'))\n"
        'head = head[:-1].encode() + b\',"text":"\'\n'
        f"body = {size} - len(head) - 2\n"
        "piece = b'x' * (1 << 20)\n"
        "pieces = [piece] * (body // len(piece)) + [b'x' * (body % len(piece)), b'\"}']\n"
        f"raw(head, announce={size}, pieces=pieces)\n"
        "print('after the big one')\n"
    )
    with _peak_rss_growth() as growth:
        result, _ = await _run(session, code)
    assert result.ok, result.error
    assert result.output_truncated
    assert result.stdout.startswith("after the big one\n"), result.stdout[:200]
    assert int(MARKER.search(result.stdout).group(1)) == size  # type: ignore[union-attr]
    assert growth[0] < 30 * MiB, f"the host's peak RSS grew by {growth[0] / MiB:.0f} MiB"
    await _still_works(session)


async def test_a_frame_announced_and_never_sent_ends_in_a_clean_kill(sandbox_backend: SandboxBackend) -> None:
    limits = Limits(timeout_s=1.5, kill_grace_s=1.0)
    async with await sandbox_backend.create_session(SessionConfig(limits=limits)) as s:
        result, _ = await _run(s, "raw(b'{\"id\":', announce=0xFFFFFFF0)\nprint('swallowed')\n")
        assert result.killed and result.timed_out and not result.state_survived, result
        assert result.error is not None and "announced" in result.error.message, result.error
        assert not s.is_alive()
        await s.restart()
        await _still_works(s)


async def test_the_reply_s_text_fields_are_capped(session: Session) -> None:
    forged = {
        "status": "error",
        "result": "r" * 3_000_000,
        "error": {"type": "T" * 100_000, "message": "m" * 3_000_000, "traceback": "t" * 3_000_000 + "END"},
        "output": {"omitted_bytes": 5, "tail": {"stdout": "s" * 3_000_000, "stderr": "z" * 3_000_000}},
        "duration_ms": "soon",
        "exit_status": "ok",
    }
    code = (
        "frame(type='stream', name='stdout', text='\\ud800 lone')\n"
        f"frame(type='reply', **json.loads({json.dumps(json.dumps(forged))}))\n"
    )
    result, _ = await _run(session, code)
    assert result.result is not None and len(result.result) <= RESULT_CHARS + 100
    assert result.error is not None
    assert len(result.error.type) <= NAME_CHARS + 100
    assert len(result.error.message) <= ERROR_CHARS + 100
    assert len(result.error.traceback) <= ERROR_CHARS + 100 and result.error.traceback.endswith("END")
    assert result.stdout.startswith("? lone") and result.output_truncated
    _bounded(result.stdout)
    assert len(result.stderr.encode()) <= 200 + TAIL_BYTES
    assert result.exit_status is None and result.duration_ms >= 0
    await _still_works(session)  # the kernel's own reply to the forged request is skipped


async def test_an_exception_too_large_to_carry_gives_a_clear_error(session: Session) -> None:
    result = await session.execute("raise ValueError('x' * (20 << 20))")
    assert result.error is not None and result.error.type == "ReplyTooLarge", result.error
    assert "ValueError" in result.error.message and "bytes" in result.error.message
    assert not result.killed and result.state_survived
    await _still_works(session)


async def test_real_figures_still_arrive(session: Session) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nprint('plotted')"
    result = await session.execute(code)
    assert result.ok and result.stdout == "plotted\n", result
    (item,) = result.display
    assert isinstance(item, DisplayData) and "image/png" in item.mime
    assert result.display_dropped == 0
