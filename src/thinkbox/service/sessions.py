"""Sandbox sessions of the service's users: created, found, expired and closed here, never shared.

A :class:`LiveSession` is a sandbox :class:`~thinkbox.sandbox.session.Session` of one user (the user's
folder mounted as its current directory, the tenant's shared folder as ``..``) and the conversation its
runs have had. Its row in the database says who owns it and when it was last used; a session unused for
``service.session_idle_s`` is closed. After a restart, a session of runs is rebuilt on first use by
replaying the code of its recorded runs (:mod:`thinkbox.agent.resume`); a session of ``/v1/sessions``
code is not (its code is not journaled) and answers 410.

A user's sandbox sessions redact the user's secrets from everything they hand out (their output filter,
:class:`~thinkbox.service.secrets.redact.SessionRedaction`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import select, update

from thinkbox.agent.events import parse_event
from thinkbox.agent.reply_format import system_prompt
from thinkbox.agent.resume import Cell, RecordedState, recorded_state, replay
from thinkbox.config import Settings
from thinkbox.models.base import Message
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import DisplayData, ExecutionResult, Language, OutputChunk, SessionConfig
from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import Run, SessionRow, new_id
from thinkbox.service.egress import Egress
from thinkbox.service.errors import ApiError, is_id
from thinkbox.service.journal import stored_records
from thinkbox.service.secrets.store import REFRESH_S, SecretStore
from thinkbox.service.storage import Storage
from thinkbox.service.tools import ToolStore
from thinkbox.service.tools.preimport import first_run_tools

log = logging.getLogger(__name__)
TOUCH_ROW_EVERY_S = 30.0


@dataclass
class LiveSession:
    id: str
    owner: Principal
    kind: str
    session: Session
    history: list[Message] = field(default_factory=list)
    busy_with: str | None = None
    """The run using the session now (a second run on it is refused)."""
    last_activity: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    row_touched: float = 0.0
    """When its row's ``last_activity_at`` was last written (see :meth:`SessionManager.touch`)."""

    def touch(self) -> None:
        self.last_activity = time.time()


class SessionManager:
    def __init__(
        self,
        db: Database,
        backend: SandboxBackend,
        storage: Storage,
        settings: Settings,
        tools: ToolStore | None = None,
        secrets: SecretStore | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.db = db
        self.tools = tools
        self.secrets = secrets
        self.egress = egress
        """The sessions' way out (HTTP through the egress proxy); None: sessions have no network."""
        self.backend = backend
        self.storage = storage
        self.settings = settings
        self.idle_s = settings.service.session_idle_s
        self.base_config = SessionConfig(limits=settings.sandbox.limits)
        self._live: dict[str, LiveSession] = {}
        self._closing: dict[str, str] = {}
        """Sessions being closed -> why (out of ``_live``, their row not marked yet)."""
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for live in list(self._live.values()):
            with contextlib.suppress(Exception):
                await live.session.close()
            if self.egress is not None:
                await self.egress.detach(live.id)
        self._live.clear()

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- creating and finding -----------------------------------------------------------------------
    async def create(self, owner: Principal, kind: str, language: Language = "py") -> LiveSession:
        await self._make_room(owner)
        row = SessionRow(id=new_id("s_"), user_id=owner.user_id, tenant_id=owner.tenant_id, kind=kind)
        await asyncio.to_thread(self._insert, row)
        try:
            sandbox = await self._open_sandbox(owner, row.id, language)
        except BaseException:
            await asyncio.to_thread(self._mark_closed, row.id, "it could not start")
            raise
        live = LiveSession(row.id, owner, kind, sandbox)
        self._live[row.id] = live
        return live

    async def _make_room(self, owner: Principal) -> None:
        """Past ``service.sessions_per_user`` open sessions, close the user's least recently used idle one."""
        mine = [s for s in self._live.values() if s.owner.user_id == owner.user_id]
        if len(mine) < self.settings.service.sessions_per_user:
            return
        idle = [s for s in mine if s.busy_with is None and not s.lock.locked()]
        if not idle:
            raise ApiError(
                429,
                "too_many_sessions",
                f"all your {len(mine)} sessions are busy (service.sessions_per_user); wait for one",
                retry_after=5,
            )
        oldest = min(idle, key=lambda s: s.last_activity)
        await self.close(oldest.id, "closed to make room for a newer session (service.sessions_per_user)")

    async def _open_sandbox(self, owner: Principal, session_id: str, language: Language = "py") -> Session:
        base = (
            self.base_config
            if language == "py"
            else self.base_config.model_copy(update={"language": language})
        )
        config = await asyncio.to_thread(
            self.storage.session_config, owner.tenant_name, owner.user_name, base
        )
        if self.tools is not None:  # the tenant's tools, read-only, importable as ``tools``
            config = await asyncio.to_thread(
                self.tools.session_config, owner.tenant_name, owner.user_name, config
            )
        if self.secrets is not None:  # the redactor is read here, off the event loop; later from its cache
            await asyncio.to_thread(self.secrets.redactor, owner.tenant_id, owner.user_id, REFRESH_S)
        if self.egress is not None:
            config = await self.egress.session_config(session_id, owner, config)
        try:
            session = await self.backend.create_session(config)
        except BaseException:
            if self.egress is not None:
                await self.egress.detach(session_id)
            raise
        if self.secrets is not None:
            session.output_filter = self.secrets.session_redaction(owner.tenant_id, owner.user_id)
        return session

    def _insert(self, row: SessionRow) -> None:
        with self.db.session() as s, s.begin():
            s.add(row)

    async def get(self, owner: Principal, session_id: str) -> LiveSession:
        """The owner's session ``session_id``: 404 when it is not theirs (or does not exist), 410 when it
        expired or was closed; a session of runs that a restart took down is rebuilt here."""
        live = self._live.get(session_id)
        if live is not None and live.owner.user_id == owner.user_id:
            return live
        row = await asyncio.to_thread(self._row, session_id)
        if row is None or row.user_id != owner.user_id:
            raise ApiError(404, "not_found", f"no session {session_id!r} of yours")
        if (closing := self._closing.get(session_id)) is not None:
            raise ApiError(410, "session_gone", _gone(session_id, closing))
        if live is not None:  # live but another user's: impossible with unique ids, refuse anyway
            raise ApiError(404, "not_found", f"no session {session_id!r} of yours")
        if row.closed_at is not None:
            raise ApiError(410, "session_gone", _gone(session_id, row.close_reason or "closed"))
        if row.kind != "run":
            await asyncio.to_thread(self._mark_closed, session_id, "the server restarted")
            raise ApiError(410, "session_gone", _gone(session_id, "the server restarted"))
        if time.time() - row.last_activity_at > self.idle_s:
            await asyncio.to_thread(self._mark_closed, session_id, "idle")
            raise ApiError(410, "session_gone", _gone(session_id, "idle"))
        return await self.rebuild(owner, session_id)

    def live(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    def live_ids(self) -> list[str]:
        return list(self._live)

    def owned_row(self, owner: Principal, session_id: str) -> SessionRow:
        """The row of the owner's session ``session_id`` (404 when it is not theirs)."""
        row = self._row(session_id)
        if row is None or row.user_id != owner.user_id:
            raise ApiError(404, "not_found", f"no session {session_id!r} of yours")
        return row

    def _row(self, session_id: str) -> SessionRow | None:
        if not is_id(session_id):
            return None
        with self.db.session() as s:
            return s.get(SessionRow, session_id)

    async def rebuild(
        self, owner: Principal, session_id: str, *, unfinished: str | None = None
    ) -> LiveSession:
        """A fresh sandbox for the session, its state rebuilt from its finished runs (``unfinished``: a run
        that will resume on it: its cells are replayed by the caller). As at the session's first run, the
        tools relevant to the first question are imported before any cell runs (service.preimport_tools),
        and the system prompt lists the tools for that question."""
        existing = self._live.get(session_id)
        if existing is not None:
            return existing
        runs = await asyncio.to_thread(self._recorded_runs, session_id, unfinished)
        live = LiveSession(session_id, owner, "run", await self._open_sandbox(owner, session_id))
        self._live[session_id] = live
        extra = ""
        if runs and self.tools is not None:
            extra = await first_run_tools(self.tools, owner, live.session, runs[0].question, self.settings)
        cells: list[Cell] = [cell for state in runs for cell in state.cells]
        failure = await replay(live.session, cells)
        if failure is not None:
            await self.close(session_id, "rebuild failed")
            raise ApiError(410, "session_gone", _gone(session_id, f"rebuilding it failed: {failure}"))
        if runs:
            files = await live.session.list_files()
            form = self.settings.agent.reply_format
            system = system_prompt(files, reply_format=form, extra=extra, network=self.egress is not None)
            live.history.append({"role": "system", "content": system})
            for state in runs:
                live.history.extend(state.messages)
        return live

    def _recorded_runs(self, session_id: str, skip: str | None) -> list[RecordedState]:
        with self.db.session() as s:
            run_ids = s.scalars(
                select(Run.id).where(Run.session_id == session_id).order_by(Run.created_at)
            ).all()
            states = []
            for run_id in run_ids:
                if run_id == skip:
                    continue
                events = [parse_event(record.data) for record in stored_records(self.db, run_id)]
                if events:
                    agent = self.settings.agent
                    states.append(recorded_state(events, agent.reply_format, agent.language))
            return states

    # -- running code -------------------------------------------------------------------------------
    async def execute(
        self, live: LiveSession, code: str, timeout: float | None, language: Language | None = None
    ) -> AsyncIterator[OutputChunk | DisplayData | ExecutionResult]:
        """Run ``code`` in the session like a notebook cell (a session used by a run answers 409): its
        output as it comes, then the result; an interpreter that was killed is started again."""
        if live.busy_with is not None:
            raise ApiError(409, "session_busy", f"session {live.id!r} is used by run {live.busy_with!r}")
        async with live.lock:
            async for item in live.session.stream(code, timeout=timeout, language=language):
                if isinstance(item, ExecutionResult):
                    if item.killed:
                        await live.session.restart()
                    await self.touch(live)
                yield item

    # -- activity, closing --------------------------------------------------------------------------
    async def touch(self, live: LiveSession) -> None:
        """Mark the session used. Expiry reads the live value; the row, read only after a restart and by
        a session list of a closed session, is written at most every TOUCH_ROW_EVERY_S (a database write
        per call would double the cost of a small cell)."""
        live.touch()
        if live.last_activity - live.row_touched >= TOUCH_ROW_EVERY_S:
            live.row_touched = live.last_activity
            await asyncio.to_thread(self._touch_row, live.id, live.last_activity)

    def _touch_row(self, session_id: str, when: float) -> None:
        with self.db.session() as s, s.begin():
            s.execute(update(SessionRow).where(SessionRow.id == session_id).values(last_activity_at=when))

    async def close_owned(self, owner: Principal, session_id: str, reason: str) -> bool:
        """Close the owner's session (404 when not theirs, 409 while a run uses it); False when it had
        already closed."""
        row = await asyncio.to_thread(self.owned_row, owner, session_id)
        live = self._live.get(row.id)
        if live is not None and live.busy_with is not None:
            raise ApiError(
                409,
                "session_busy",
                f"session {session_id!r} is used by run {live.busy_with!r}; cancel the run first",
            )
        if row.closed_at is not None:
            return False
        await self.close(session_id, reason)
        return True

    async def close(self, session_id: str, reason: str) -> None:
        self._closing[session_id] = reason
        try:
            live = self._live.pop(session_id, None)
            # the row first: from the moment the session is not live, its row says closed and why (closing
            # the sandbox session can take a while on a loaded machine)
            await asyncio.to_thread(self._mark_closed, session_id, reason)
            if live is not None:
                with contextlib.suppress(Exception):
                    await live.session.close()
            if self.egress is not None:
                await self.egress.detach(session_id)
        finally:
            self._closing.pop(session_id, None)

    def _mark_closed(self, session_id: str, reason: str) -> None:
        with self.db.session() as s, s.begin():
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.closed_at.is_(None))
                .values(closed_at=time.time(), close_reason=reason)
            )

    def list_rows(self, owner: Principal) -> list[SessionRow]:
        with self.db.session() as s:
            query = select(SessionRow).where(SessionRow.user_id == owner.user_id)
            return list(s.scalars(query.order_by(SessionRow.last_activity_at.desc()).limit(200)))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_s / 4))
            now = time.time()
            for live in list(self._live.values()):
                if (
                    live.busy_with is None
                    and not live.lock.locked()
                    and now - live.last_activity > self.idle_s
                ):
                    log.info("closing idle session %s", live.id)
                    await self.close(live.id, "idle")


def _gone(session_id: str, why: str) -> str:
    return (
        f"session {session_id!r} is closed ({why}); its variables are gone but your files are kept: "
        "start a new session (POST /v1/sessions, or a run without session_id)"
    )
