"""A warm pool of fresh sessions over any backend.

The pool keeps ``size`` sessions started and idle, so that :meth:`SessionPool.acquire` hands one out in
microseconds. Rules it keeps:

- a session is handed out **once**: :meth:`SessionPool.release` closes it, it never goes back to the pool
  (a used interpreter carries one conversation's variables, files and imports);
- after every acquire a background task refills the pool, at most ``refill_concurrency`` sessions at a
  time, so a burst does not start dozens of interpreters at once on a small machine;
- pooled sessions that die (killed, out of memory) are noticed and replaced;
- leased sessions unused for ``idle_timeout_s`` are closed; their holder gets
  :class:`~thinkbox.errors.SessionDead` on the next call;
- :meth:`SessionPool.aclose` closes every session it started and cancels its own tasks. The backend
  belongs to the caller and stays open.

Usage::

    async with SessionPool(backend, size=2) as pool:
        async with pool.lease() as session:
            await session.execute("1 + 1")
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from thinkbox.errors import SandboxError, SessionStartError, ThinkboxError
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import SessionConfig

if TYPE_CHECKING:
    from thinkbox.config import SandboxSettings

_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool's counters."""

    ready: int
    leased: int
    starting: int
    created: int
    """Sessions started by the pool since :meth:`SessionPool.start` (pooled and on-demand)."""
    acquired_warm: int
    acquired_cold: int
    replaced_dead: int
    """Pooled sessions found dead (or already used through ready_sessions()) and replaced."""
    reaped_idle: int
    """Leased sessions closed because they were idle too long."""
    refill_failures: int
    last_error: str | None


class SessionPool:
    """Fresh sessions ready ahead of time. See the module docstring for its rules."""

    def __init__(
        self,
        backend: SandboxBackend,
        *,
        size: int,
        config: SessionConfig | None = None,
        idle_timeout_s: float = 900.0,
        max_sessions: int | None = None,
        refill_concurrency: int = 2,
        check_interval_s: float | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if max_sessions is not None and max_sessions < max(size, 1):
            raise ValueError("max_sessions must be at least max(size, 1)")
        if refill_concurrency < 1:
            raise ValueError("refill_concurrency must be >= 1")
        self.backend = backend
        self.size = size
        self.config = config or SessionConfig()
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self.refill_concurrency = refill_concurrency
        self.check_interval_s = check_interval_s or min(1.0, idle_timeout_s / 2)
        self._ready: deque[Session] = deque()
        self._leased: dict[str, tuple[Session, float]] = {}  # id -> (session, leased at)
        self._starting = 0
        self._refill_task: asyncio.Task[None] | None = None
        self._check_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._started = False
        self._closed = False
        self._backoff_s = 0.0
        self._created = self._warm = self._cold = self._replaced = self._reaped = self._failures = 0
        self._last_error: str | None = None

    @classmethod
    def from_settings(cls, backend: SandboxBackend, settings: SandboxSettings) -> SessionPool:
        """A pool sized and timed by ``[sandbox]`` settings (pool_size, idle_timeout_s, limits)."""
        return cls(
            backend,
            size=settings.pool_size,
            config=SessionConfig(limits=settings.limits),
            idle_timeout_s=settings.idle_timeout_s,
        )

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self, *, wait: bool = True) -> None:
        """Start the backend and fill the pool (waits until it is full unless ``wait=False``).

        Raises the backend's error when not a single session can be started.
        """
        if self._closed:
            raise SandboxError("this session pool is closed; create a new SessionPool")
        if self._started:
            return
        self._started = True
        try:
            await self.backend.start()
            self._check_task = asyncio.create_task(self._check_loop(), name="thinkbox-pool-check")
            if self.size == 0:
                return
            if wait:
                # the first session is started here so a broken backend fails loudly, not in the background
                self._put_ready(await self._create())
            self._kick()
            if wait:
                await self.wait_full()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close every session the pool started (ready and leased) and stop its background tasks."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._refill_task, self._check_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sessions = list(self._ready) + [s for s, _ in self._leased.values()]
        self._ready.clear()
        self._leased.clear()
        await asyncio.gather(*(_close_quietly(s) for s in sessions))
        while self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)
        self._changed.set()

    async def __aenter__(self) -> SessionPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- leasing ----------------------------------------------------------------------------------
    async def acquire(self) -> Session:
        """A never-used, live session: from the pool when one is ready, else started now."""
        self._check_open()
        if not self._started:
            await self.start(wait=False)
        while self._ready:
            session = self._ready.popleft()
            if session.executions == 0 and _looks_alive(session):
                self._lease(session)
                self._warm += 1
                self._kick()
                return session
            self._replaced += 1
            self._close_later(session)
        self._kick()
        session = await self._create()
        if self._closed:
            await _close_quietly(session)
            raise SandboxError("the session pool was closed while a session was being started")
        self._lease(session)
        self._cold += 1
        return session

    async def release(self, session: Session) -> None:
        """Give a session back: it is closed, never reused."""
        self._leased.pop(session.id, None)
        await session.close()
        self._kick()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Session]:
        """``async with pool.lease() as session:`` acquire, then release (close) on exit."""
        session = await self.acquire()
        try:
            yield session
        finally:
            await self.release(session)

    # -- observation ------------------------------------------------------------------------------
    def stats(self) -> PoolStats:
        return PoolStats(
            ready=len(self._ready),
            leased=len(self._leased),
            starting=self._starting,
            created=self._created,
            acquired_warm=self._warm,
            acquired_cold=self._cold,
            replaced_dead=self._replaced,
            reaped_idle=self._reaped,
            refill_failures=self._failures,
            last_error=self._last_error,
        )

    def ready_sessions(self) -> list[Session]:
        """The sessions waiting in the pool (to inspect them; acquire() to use one)."""
        return list(self._ready)

    async def wait_full(self) -> None:
        """Wait until ``size`` sessions are ready (or as many as ``max_sessions`` allows).

        Raises :class:`SessionStartError` when starting a session fails meanwhile. Bound it with
        ``asyncio.timeout``.
        """
        failures = self._failures
        while not self._closed and len(self._ready) < self._target():
            if self._failures > failures:
                raise SessionStartError(f"the session pool could not start a session: {self._last_error}")
            self._kick()
            self._changed.clear()
            await self._changed.wait()

    # -- internals --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("this session pool is closed; create a new SessionPool")

    def _target(self) -> int:
        if self.max_sessions is None:
            return self.size
        room = self.max_sessions - len(self._leased)
        return max(0, min(self.size, room))

    def _deficit(self) -> int:
        return self._target() - len(self._ready) - self._starting

    def _lease(self, session: Session) -> None:
        self._leased[session.id] = (session, time.monotonic())
        self._changed.set()

    def _put_ready(self, session: Session) -> None:
        self._ready.append(session)
        self._changed.set()

    async def _create(self) -> Session:
        if self.max_sessions is not None:
            total = len(self._ready) + len(self._leased) + self._starting
            if total >= self.max_sessions:
                raise SessionStartError(
                    f"the session pool is at max_sessions={self.max_sessions}; release sessions or raise "
                    "max_sessions",
                    retryable=True,
                )
        self._starting += 1
        try:
            session = await self.backend.create_session(self.config)
        finally:
            self._starting -= 1
        self._created += 1
        return session

    def _kick(self) -> None:
        """Start the refill task if the pool is short and none is running."""
        if self._closed or self._deficit() <= 0:
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.create_task(self._refill(), name="thinkbox-pool-refill")

    async def _refill(self) -> None:
        try:
            while not self._closed and (n := min(self._deficit(), self.refill_concurrency)) > 0:
                if self._backoff_s:
                    await asyncio.sleep(self._backoff_s)
                results = await asyncio.gather(*(self._create() for _ in range(n)), return_exceptions=True)
                for result in results:
                    if isinstance(result, Session):
                        self._backoff_s = 0.0
                        if self._closed:
                            await _close_quietly(result)
                        else:
                            self._put_ready(result)
                    elif isinstance(result, Exception):
                        self._failures += 1
                        self._last_error = str(result)
                        self._backoff_s = min(_MAX_BACKOFF_S, max(0.1, self._backoff_s * 2))
                        self._changed.set()
                    elif isinstance(result, BaseException):
                        raise result
        finally:
            self._refill_task = None

    async def _check_loop(self) -> None:
        """Replace pooled sessions that died; close leased sessions idle past ``idle_timeout_s``."""
        while not self._closed:
            await asyncio.sleep(self.check_interval_s)
            self.check()

    def check(self) -> None:
        """One round of health checks and idle reaping (also run periodically in the background)."""
        if self._closed:
            return
        alive: deque[Session] = deque()
        for session in self._ready:
            if session.executions == 0 and _looks_alive(session):
                alive.append(session)
            else:
                self._replaced += 1
                self._close_later(session)
        self._ready = alive
        now = time.monotonic()
        for sid, (session, leased_at) in list(self._leased.items()):
            if not session.is_alive() and session.process is None:
                self._leased.pop(sid)  # closed by its holder without release()
            elif now - max(session.last_used, leased_at) > self.idle_timeout_s:
                self._leased.pop(sid)
                self._reaped += 1
                session.retire(f"unused for more than {self.idle_timeout_s:g} s, reaped by the pool")
                self._close_later(session)
        self._kick()

    def _close_later(self, session: Session) -> None:
        task = asyncio.create_task(_close_quietly(session), name="thinkbox-pool-close")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)
        self._changed.set()


def _looks_alive(session: Session) -> bool:
    """Live, and its interpreter has not hung up: one non-blocking peek at the socket (about 1 µs)."""
    if not session.is_alive() or session.process is None:
        return False
    try:
        data = session.process.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError as exc:
        return exc.errno == errno.EINTR
    return data != b""  # b"" = the other end closed


async def _close_quietly(session: Session) -> None:
    with contextlib.suppress(ThinkboxError, OSError):
        await session.close()
