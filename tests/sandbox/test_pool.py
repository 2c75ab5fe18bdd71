"""SessionPool over a real backend: zygote, else bwrap (THINKBOX_TEST_BACKEND picks another)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from thinkbox.config import SandboxSettings
from thinkbox.errors import SessionDead, ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.types import Limits, Mount, SessionConfig

WAIT_S = 60.0


async def _first_working_backend() -> tuple[SandboxBackend | None, list[str]]:
    wanted = os.environ.get("THINKBOX_TEST_BACKEND")
    names = [wanted] if wanted else ["zygote", "bwrap"]
    reasons = []
    for name in names:
        try:
            if ":" in name:
                import importlib

                module, _, attr = name.partition(":")
                backend: SandboxBackend = getattr(importlib.import_module(module), attr)()
            else:
                backend = registry.create_backend(name)
            await backend.start()
            return backend, reasons
        except (ThinkboxError, ImportError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    return None, reasons


@pytest.fixture
async def backend() -> AsyncIterator[SandboxBackend]:
    found, reasons = await _first_working_backend()
    if found is None:
        pytest.skip("no sandbox backend runs here: " + "; ".join(reasons))
    try:
        yield found
    finally:
        await found.aclose()


async def _eventually(condition: Callable[[], bool], within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def test_acquire_hands_out_a_ready_never_used_session_from_the_pool(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=2) as pool:
        pooled = {s.id for s in pool.ready_sessions()}
        assert len(pooled) == 2
        session = await pool.acquire()
        assert session.id in pooled
        assert session.executions == 0
        result = await session.execute("1 + 1")
        assert result.ok and result.result == "2"
        assert pool.stats().acquired_warm == 1
        await pool.release(session)


async def test_pool_refills_in_the_background_after_acquire(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=2) as pool:
        taken = [await pool.acquire(), await pool.acquire()]
        assert pool.stats().ready < 2
        async with asyncio.timeout(WAIT_S):
            await pool.wait_full()
        stats = pool.stats()
        assert stats.ready == 2
        assert stats.created == 4
        assert {s.id for s in pool.ready_sessions()}.isdisjoint(s.id for s in taken)
        for session in taken:
            await pool.release(session)


async def test_empty_pool_starts_a_fresh_session_on_acquire(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=0) as pool:
        async with pool.lease() as session:
            assert (await session.execute("6 * 7")).result == "42"
        assert pool.stats().acquired_cold == 1


async def test_dead_pooled_session_is_replaced(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=1, check_interval_s=0.05) as pool:
        (victim,) = pool.ready_sessions()
        assert victim.process is not None
        await victim.process.kill()
        await _eventually(lambda: pool.stats().replaced_dead > 0)
        async with asyncio.timeout(WAIT_S):
            await pool.wait_full()
        (replacement,) = pool.ready_sessions()
        assert replacement.id != victim.id
        async with pool.lease() as session:
            assert session.id == replacement.id
            assert (await session.execute("'alive'")).result == "'alive'"


async def test_dead_pooled_session_is_skipped_by_acquire(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=1, check_interval_s=3600) as pool:
        (victim,) = pool.ready_sessions()
        assert victim.process is not None
        await victim.process.kill()
        await asyncio.sleep(0.05)  # let the event loop see the hang-up
        async with pool.lease() as session:
            assert session.id != victim.id
            assert (await session.execute("1")).ok


async def test_used_session_is_never_handed_to_the_next_acquirer(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=1) as pool:
        first = await pool.acquire()
        await first.execute("secret = 'conversation A'")
        await first.put_file("a.txt", b"private")
        await pool.release(first)
        second = await pool.acquire()
        assert second.id != first.id
        assert (await second.execute("'secret' in globals()")).result == "False"
        assert (await second.execute("import os; os.path.exists('a.txt')")).result == "False"
        with pytest.raises(SessionDead):
            await first.execute("secret")
        await pool.release(second)


async def test_leased_session_idle_past_timeout_is_reaped(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=0, idle_timeout_s=0.3, check_interval_s=0.05) as pool:
        idle = await pool.acquire()
        busy = await pool.acquire()
        await busy.execute("x = 1")
        async with asyncio.timeout(WAIT_S):
            while pool.stats().reaped_idle == 0:
                await busy.execute("x = 1")
                await asyncio.sleep(0.05)
        assert pool.stats().reaped_idle == 1
        with pytest.raises(SessionDead):
            await idle.execute("1")
        assert (await busy.execute("x")).result == "1"
        await pool.release(busy)


async def test_aclose_leaves_no_processes_and_no_tasks(backend: SandboxBackend) -> None:
    pool = SessionPool(backend, size=2)
    await pool.start()
    leased = await pool.acquire()
    sessions = [leased, *pool.ready_sessions()]
    pids = [pid for s in sessions if s.process is not None for pid in s.process.host_pids()]
    await pool.aclose()
    assert all(not s.is_alive() for s in sessions)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("thinkbox-pool")]
    await _eventually(lambda: not any(_running(pid) for pid in pids), within_s=5)
    with pytest.raises(ThinkboxError):
        await pool.acquire()


async def test_max_sessions_caps_what_the_pool_starts(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=1, max_sessions=2) as pool:
        a = await pool.acquire()
        b = await pool.acquire()
        assert pool.stats().ready == 0
        with pytest.raises(ThinkboxError, match="max_sessions"):
            await pool.acquire()
        await pool.release(a)
        async with asyncio.timeout(WAIT_S):
            await pool.wait_full()
        await pool.release(b)


async def test_pool_from_settings_uses_pool_size_idle_timeout_and_limits(backend: SandboxBackend) -> None:
    settings = SandboxSettings(pool_size=1, idle_timeout_s=42, limits=Limits(timeout_s=7))
    async with SessionPool.from_settings(backend, settings) as pool:
        assert pool.size == 1 and pool.idle_timeout_s == 42
        (session,) = pool.ready_sessions()
        assert session.config.limits.timeout_s == 7


async def test_refill_starts_at_most_refill_concurrency_sessions_at_once(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=3, refill_concurrency=1) as pool:
        taken = [await pool.acquire() for _ in range(3)]
        most = 0
        async with asyncio.timeout(WAIT_S):
            while pool.stats().ready < 3:
                most = max(most, pool.stats().starting)
                await asyncio.sleep(0.005)
        assert most == 1
        for session in taken:
            await pool.release(session)


async def test_pool_that_cannot_start_a_session_fails_loudly_and_leaves_no_task(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    broken = SessionConfig(mounts=(Mount(source=tmp_path / "absent", target="data"),))
    pool = SessionPool(backend, size=2, config=broken)
    with pytest.raises(ThinkboxError):
        await pool.start()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("thinkbox-pool")]


async def test_pooled_session_used_behind_the_pools_back_is_not_handed_out(backend: SandboxBackend) -> None:
    async with SessionPool(backend, size=1, check_interval_s=3600) as pool:
        (tampered,) = pool.ready_sessions()
        await tampered.execute("leak = 1")
        async with pool.lease() as session:
            assert session.id != tampered.id
            assert (await session.execute("'leak' in globals()")).result == "False"
        assert not tampered.is_alive()
