"""The sandbox backend family: one narrow interface, every backend behind it.

Layers (see docs/architecture.md):

- a **backend** decides where an interpreter lives and how it is isolated; its one job is
  :meth:`SandboxBackend.spawn`, which returns a :class:`KernelProcess`: a connected socket that speaks
  docs/protocol.md plus the handles to interrupt, kill and await the interpreter;
- a **session** (:class:`thinkbox.sandbox.session.Session`) speaks the protocol over that socket; it is
  the same class for every backend;
- a **pool** (:class:`thinkbox.sandbox.pool.SessionPool`) keeps fresh sessions ready over any backend.
"""

from __future__ import annotations

import abc
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from thinkbox.sandbox.types import SessionConfig

if TYPE_CHECKING:
    from thinkbox.sandbox.session import Session


@dataclass
class ExitInfo:
    """How an interpreter ended: ``returncode`` as from ``os.waitstatus_to_exitcode`` (negative = signal)."""

    returncode: int | None
    reason: str = ""


class KernelProcess(abc.ABC):
    """A live interpreter inside a sandbox, as a backend hands it over."""

    sock: socket.socket
    """Connected stream socket speaking docs/protocol.md (non-blocking use by the session)."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Deliver SIGINT to the interpreter (KeyboardInterrupt in the running code)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Kill the interpreter and everything it started; return when they are gone."""

    @abc.abstractmethod
    async def wait(self) -> ExitInfo:
        """Wait until the interpreter has ended and say how."""

    def host_pids(self) -> list[int]:
        """Host pids of the session's processes (for memory accounting); empty where unknown."""
        return []


@dataclass
class BackendInfo:
    name: str
    isolation: str
    details: dict[str, str] = field(default_factory=dict)


class SandboxBackend(abc.ABC):
    """Provisions isolated interpreters. Subclasses implement :meth:`spawn`; the rest is shared."""

    name: ClassVar[str]

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend (start a fork server, check tools). Idempotent; called by create_session."""

    @abc.abstractmethod
    async def spawn(self, session_id: str, config: SessionConfig) -> KernelProcess:
        """Start an interpreter for ``session_id``, ready to serve (its ``hello`` not yet read).

        Called again with the same ``session_id`` on restart: backends that can should keep the
        session's workspace files across that.
        """

    async def release(self, session_id: str) -> None:  # noqa: B027 - optional hook
        """The session is closed for good: free its workspace and any other resources."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop the backend and every interpreter it still runs."""

    def info(self) -> BackendInfo:
        return BackendInfo(name=self.name, isolation="unknown")

    async def create_session(self, config: SessionConfig | None = None) -> Session:
        """A new, ready session. Raises :class:`thinkbox.errors.SessionStartError` when it cannot."""
        from thinkbox.sandbox.session import Session

        await self.start()
        return await Session.open(self, config or SessionConfig())

    async def __aenter__(self) -> SandboxBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
