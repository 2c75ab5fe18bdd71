"""Runs of the service: the same agent loop as ``thinkbox ask``, driven in the background, journaled.

``submit`` checks the user's limits, stores the run as ``queued`` and starts a task; the task waits for a
run slot (:class:`~thinkbox.service.fair.FairGate`, tenants in turn), takes the user's session (a new one,
or the one a follow-up names), and feeds every event of :func:`~thinkbox.agent.route.run_routed` (the
loop, or a direct answer: the run's ``route`` or ``agent.route``) to the
:class:`~thinkbox.service.journal.Journal`. The model is one instance shared by every run, behind its own
fair gate. After a crash, :meth:`RunManager.resume_unfinished` goes on with every run that had not ended.
For a user with secrets, the question is redacted before it is stored or shown to the model, and the
journal redacts every event of the run (:mod:`thinkbox.service.secrets.redact`). After an answer, while
the session is still the run's, the functions its code defined and called are saved as the tenant's tools
(:mod:`thinkbox.service.tools.harvest`, ``service.harvest_tools``), before ``RunFinished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select

from thinkbox.agent.events import (
    ActionParsed,
    Event,
    ExecutionFinished,
    FinalAnswer,
    LimitReached,
    NetworkRequest,
    ParseFailed,
    RunError,
    RunFinished,
    RunStarted,
    StepStarted,
    parse_event,
)
from thinkbox.agent.loop import ResultHook, check_question
from thinkbox.agent.reply_format import system_prompt
from thinkbox.agent.resume import recorded_state, replay
from thinkbox.agent.route import Route, run_routed
from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.base import ModelBackend
from thinkbox.sandbox.types import ExecutionResult
from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import RUN_ENDED, Run, Tenant, User, new_id
from thinkbox.service.errors import ApiError, is_id, no_nul
from thinkbox.service.fair import FairGate, FairModel
from thinkbox.service.journal import Journal, stored_records
from thinkbox.service.secrets.store import REFRESH_S, SecretStore
from thinkbox.service.sessions import LiveSession, SessionManager
from thinkbox.service.storage import Storage, StorageError
from thinkbox.service.tools import ToolStore
from thinkbox.service.tools import agent as tool_agent
from thinkbox.service.tools.harvest import Harvest
from thinkbox.service.tools.preimport import first_run_tools

log = logging.getLogger(__name__)
_STATUS = {"answered": "succeeded", "limit": "failed", "error": "failed", "cancelled": "cancelled"}


@dataclass
class _Active:
    run_id: str
    owner: Principal
    session_id: str | None
    task: asyncio.Task[None] | None = None
    steps: int = 0
    tokens: int = 0
    started: float = 0.0
    route: Route | None = None
    """The run's route (None: agent.route); runs named files go to code under auto."""
    named_files: bool = False
    cancelled_why: str = "cancelled by the user (POST /v1/runs/{id}/cancel)"


class _Stop(Exception):
    """The run must end now, as ``RunError(code, message)``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RunManager:
    def __init__(
        self,
        *,
        db: Database,
        journal: Journal,
        sessions: SessionManager,
        storage: Storage,
        model: ModelBackend,
        settings: Settings,
        model_concurrency: int = 1,
        tools: ToolStore | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.db, self.journal, self.sessions, self.storage = db, journal, sessions, storage
        self.tools, self.secrets = tools, secrets
        self.model, self.settings = model, settings
        self.run_gate = FairGate(settings.service.active_runs)
        self.model_gate = FairGate(model_concurrency)
        self._active: dict[str, _Active] = {}
        self._stopping = False
        if sessions.egress is not None:
            sessions.egress.listener = self._network_request

    def _network_request(self, session_id: str, event: NetworkRequest) -> None:
        """A request of a session's code, made while a run used the session: an event of that run."""
        live = self.sessions.live(session_id)
        active = self._active.get(live.busy_with) if live is not None and live.busy_with else None
        if active is not None and active.task is not None:
            self.journal.append(active.run_id, event)

    # -- submitting ---------------------------------------------------------------------------------
    async def submit(
        self,
        owner: Principal,
        question: str,
        session_id: str | None,
        files: list[str],
        route: Route | None = None,
    ) -> Run:
        try:
            question = check_question(no_nul("the question", question))
        except ThinkboxError as exc:
            raise ApiError(400, "bad_question", exc.message) from None
        self._check_limits(owner)
        if self.secrets is not None:
            redactor = await asyncio.to_thread(
                self.secrets.redactor, owner.tenant_id, owner.user_id, REFRESH_S
            )
            question = redactor.text(question)
        run_id = new_id("r_")
        # holds the place while we check the rest
        self._active[run_id] = _Active(run_id, owner, session_id, route=route, named_files=bool(files))
        live: LiveSession | None = None
        try:
            for path in files:
                await asyncio.to_thread(self.storage.require_file, owner.tenant_name, owner.user_name, path)
            over = await asyncio.to_thread(self.storage.check_quota, owner.tenant_name, owner.user_name)
            if over is not None:
                raise ApiError(
                    413, "quota_exceeded", f"{over}; delete files (DELETE /v1/files/{{path}}) to go on"
                )
            if session_id is not None:
                live = await self.sessions.get(owner, session_id)
                if live.busy_with is not None:
                    busy, live = live.busy_with, None
                    raise ApiError(
                        409,
                        "session_busy",
                        f"session {session_id!r} is busy with run {busy!r}; "
                        "wait for it to end or cancel it (POST /v1/runs/{id}/cancel)",
                    )
                live.busy_with = run_id
            row = Run(
                id=run_id,
                user_id=owner.user_id,
                tenant_id=owner.tenant_id,
                session_id=session_id,
                question=question,
                files=json.dumps(files),
                status="queued",
                created_at=time.time(),
            )
            await asyncio.to_thread(self._insert, row)
        except BaseException:
            self._active.pop(run_id, None)
            if live is not None and live.busy_with == run_id:
                live.busy_with = None
            raise
        self._launch(row.id, owner, session_id, question, files)
        return row

    def _check_limits(self, owner: Principal) -> None:
        svc = self.settings.service
        mine = sum(1 for a in self._active.values() if a.owner.user_id == owner.user_id)
        if mine >= svc.runs_per_user:
            raise ApiError(
                429,
                "too_many_runs",
                f"you have {mine} runs queued or running, the most allowed "
                "(service.runs_per_user); wait for one to end",
                retry_after=2,
            )
        ours = sum(1 for a in self._active.values() if a.owner.tenant_id == owner.tenant_id)
        if ours >= svc.runs_per_tenant:
            raise ApiError(
                429,
                "too_many_runs",
                f"your tenant has {ours} runs queued or running, the most "
                "allowed (service.runs_per_tenant); wait for one to end",
                retry_after=2,
            )

    def _insert(self, row: Run) -> None:
        with self.db.session() as s, s.begin():
            s.add(row)

    def _launch(
        self,
        run_id: str,
        owner: Principal,
        session_id: str | None,
        question: str,
        files: list[str],
        events: list[Event] | None = None,
        last_seq: int = 0,
    ) -> None:
        active = self._active.get(run_id) or _Active(run_id, owner, session_id)
        self._active[run_id] = active
        redactor = None
        if self.secrets is not None:  # warmed by the caller: a dict lookup from here on
            redactor = functools.partial(self.secrets.redactor, owner.tenant_id, owner.user_id)
        self.journal.open_run(run_id, last_seq, redactor)
        active.task = asyncio.create_task(self._drive(active, question, files, events), name=f"run-{run_id}")

    # -- driving ------------------------------------------------------------------------------------
    async def _drive(
        self, active: _Active, question: str, files: list[str], events: list[Event] | None
    ) -> None:
        live: LiveSession | None = None
        try:
            async with self.run_gate.slot(active.owner.tenant_id):
                active.started = time.time()
                live = await self._session_for(active, resumed=events is not None)
                self.journal.update_run(
                    active.run_id, status="running", started_at=active.started, session_id=live.id
                )
                await self._agent(active, live, _with_files(question, files), events)
        except asyncio.CancelledError:
            if self._stopping:  # the service stops: the run goes on at the next start
                raise
            self._end(active, "cancelled", active.cancelled_why)
        except _Stop as stop:
            self._end(active, stop.code, stop.message)
        except ApiError as exc:
            self._end(active, exc.code, exc.message)
        except Exception as exc:
            log.exception("run %s failed", active.run_id)
            self._end(active, "internal_error", f"the service failed: {type(exc).__name__}: {exc}")
        finally:
            if live is None and active.session_id is not None:  # ended before taking its session
                live = self.sessions.live(active.session_id)
                if live is not None and live.busy_with != active.run_id:
                    live = None
            if live is not None:
                live.busy_with = None
                with contextlib.suppress(Exception):
                    await self.sessions.touch(live)
            if not self._stopping:
                await self.journal.flush()
                self.journal.close_run(active.run_id)
            self._active.pop(active.run_id, None)

    async def _session_for(self, active: _Active, *, resumed: bool) -> LiveSession:
        if active.session_id is None:
            live = await self.sessions.create(active.owner, "run")
        elif resumed:
            live = await self.sessions.rebuild(active.owner, active.session_id, unfinished=active.run_id)
        else:
            live = await self.sessions.get(active.owner, active.session_id)
        live.busy_with = active.run_id
        active.session_id = live.id
        if self.sessions.egress is not None:
            self.sessions.egress.begin_run(live.id)
        return live

    async def _agent(
        self, active: _Active, live: LiveSession, question: str, events: list[Event] | None
    ) -> None:
        form, language = self.settings.agent.reply_format, self.settings.agent.language
        state = recorded_state(events, form, language) if events else None
        question = state.question if state is not None else question
        on_result = await self._tools_for(active.owner, live, question)  # tools imported before a replay
        if state is not None:
            failure = await replay(live.session, state.cells)
            if failure is not None:
                raise _Stop("resume_failed", f"the run could not be resumed after a restart: {failure}")
        model = FairModel(self.model, self.model_gate, active.owner.tenant_id)
        agent = cast(
            AsyncGenerator[Event, None],
            run_routed(
                question,
                model=model,
                session=live.session,
                settings=self.settings,
                history=live.history,
                run_id=active.run_id,
                resume=state,
                on_result=on_result,
                route=active.route,
                has_files=active.named_files,
            ),
        )
        quota: asyncio.Task[StorageError | None] | None = None
        owner = active.owner
        harvest = await self._harvest_for(owner, live, events)
        try:
            async for event in agent:
                self.journal.append(active.run_id, event, **self._fields(active, event))
                if harvest is not None:
                    harvest.see(event)
                    if isinstance(event, FinalAnswer) and (saved := await harvest.after_answer()):
                        self.journal.append(active.run_id, saved)
                if quota is not None and quota.done():  # checked while the model thought
                    if (over := quota.result()) is not None:
                        raise _Stop("quota_exceeded", str(over))
                    quota = None
                if isinstance(event, ExecutionFinished):
                    live.touch()
                    if quota is None:
                        check = asyncio.to_thread(
                            self.storage.check_after_code, owner.tenant_name, owner.user_name
                        )
                        quota = asyncio.ensure_future(check)
        finally:
            await agent.aclose()
            if quota is not None:
                quota.cancel()

    async def _tools_for(self, owner: Principal, live: LiveSession, question: str) -> ResultHook | None:
        """The tenant's tools for this run: a session's first run gets the system prompt listing them (the
        most relevant to its question; those relevant imported first, service.preimport_tools), every run
        the hook that saves what ``save_tool`` asks for."""
        store = self.tools
        if store is None:
            return None
        if not live.history:
            extra = await first_run_tools(store, owner, live.session, question, self.settings)
            files = await live.session.list_files()
            network = self.sessions.egress is not None
            form = self.settings.agent.reply_format
            system = system_prompt(files, reply_format=form, extra=extra, network=network)
            live.history.append({"role": "system", "content": system})

        async def on_result(result: ExecutionResult) -> str:
            return await tool_agent.from_run(store, owner, result)

        return on_result

    async def _harvest_for(
        self, owner: Principal, live: LiveSession, events: list[Event] | None
    ) -> Harvest | None:
        """What saves the run's functions as tools after its answer (service.harvest_tools); None: off."""
        if self.tools is None or not self.settings.service.harvest_tools:
            return None
        redactor = None
        if self.secrets is not None:
            redactor = await asyncio.to_thread(
                self.secrets.redactor, owner.tenant_id, owner.user_id, REFRESH_S
            )
        timeout_s = self.settings.service.tool_test_timeout_s
        harvest = Harvest(self.tools, owner, live.session, timeout_s=timeout_s, redactor=redactor)
        for event in events or ():  # a resumed run: the steps recorded before count too
            harvest.see(event)
        return harvest

    def _fields(self, active: _Active, event: Event) -> dict[str, Any]:
        if isinstance(event, RunStarted):
            return {"model": event.model}
        if isinstance(event, StepStarted):
            active.steps = event.step
            if self.sessions.egress is not None and active.session_id is not None:
                self.sessions.egress.set_step(active.session_id, event.step)
            return {"steps": event.step}
        if isinstance(event, ActionParsed | ParseFailed):
            active.tokens = event.tokens
            return {"tokens": event.tokens}
        if isinstance(event, FinalAnswer):
            return {"answer": event.answer}
        if isinstance(event, LimitReached):
            return {"error": event.message}
        if isinstance(event, RunError):
            return {"error": f"{event.code}: {event.message}"}
        if isinstance(event, RunFinished):
            return {
                "status": _STATUS[event.status],
                "steps": event.steps,
                "tokens": event.tokens,
                "finished_at": time.time(),
            }
        return {}

    def _end(self, active: _Active, code: str, message: str) -> None:
        """End the run that stopped outside the loop: its terminal events, as the loop would write them."""
        duration = round(time.time() - active.started, 3) if active.started else 0.0
        error = RunError(
            code=code, message=message, steps=active.steps, duration_s=duration, tokens=active.tokens
        )
        status = "cancelled" if code == "cancelled" else "error"
        finished = RunFinished(
            run_id=active.run_id,
            status=status,
            answer=None,
            steps=active.steps,
            duration_s=duration,
            tokens=active.tokens,
        )
        for event in (error, finished):
            self.journal.append(active.run_id, event, **self._fields(active, event))

    # -- cancelling, reading --------------------------------------------------------------------------
    async def cancel(self, owner: Principal, run_id: str, why: str | None = None) -> Run:
        """Stop a run; ``why`` (default: the user cancelled it) is kept as its error."""
        row = await asyncio.to_thread(self.get, owner, run_id)
        active = self._active.get(run_id)
        if row.status in RUN_ENDED or active is None or active.task is None:
            raise ApiError(
                409,
                "run_finished",
                f"run {run_id!r} has already ended ({row.status}); there is nothing to cancel",
            )
        active.cancelled_why = why or active.cancelled_why
        active.task.cancel()
        await asyncio.wait({active.task}, timeout=10)
        return await asyncio.to_thread(self.get, owner, run_id)

    def get(self, owner: Principal, run_id: str) -> Run:
        if not is_id(run_id):
            raise ApiError(404, "not_found", f"no run {run_id!r} of yours")
        with self.db.session() as s:
            row = s.get(Run, run_id)
        if row is None or row.user_id != owner.user_id:
            raise ApiError(404, "not_found", f"no run {run_id!r} of yours")
        return row

    def list_runs(self, owner: Principal, *, limit: int, offset: int, text: str | None) -> list[Run]:
        query = select(Run).where(Run.user_id == owner.user_id)
        if text:
            no_nul("q", text)
            query = query.where(Run.question.icontains(text, autoescape=True))
        query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)
        with self.db.session() as s:
            return list(s.scalars(query))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [json.loads(record.data) for record in stored_records(self.db, run_id)]

    @property
    def active(self) -> int:
        return len(self._active)

    def running(self) -> dict[str, Principal]:
        """The runs going on now -> who asked."""
        return {run_id: active.owner for run_id, active in self._active.items()}

    async def wait_idle(self) -> None:
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def aclose(self) -> None:
        """Stop driving runs, as a crash would: they stay unfinished in the database and resume at the next
        start (no terminal event is written for them)."""
        self._stopping = True
        tasks = [a.task for a in self._active.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # -- after a restart -------------------------------------------------------------------------------
    async def resume_unfinished(self) -> int:
        """Go on with every run that had not ended when the last process died; how many."""
        unfinished = await asyncio.to_thread(self._unfinished)
        for run, tenant, user in unfinished:
            owner = Principal(
                tenant_id=tenant.id, tenant_name=tenant.name, user_id=user.id, user_name=user.name, key_id=""
            )
            events = await asyncio.to_thread(self._run_events, run.id)
            if self.secrets is not None:
                await asyncio.to_thread(self.secrets.redactor, tenant.id, user.id)
            self._launch(
                run.id,
                owner,
                run.session_id,
                run.question,
                json.loads(run.files),
                events or None,
                run.last_seq,
            )
        return len(unfinished)

    def _unfinished(self) -> list[tuple[Run, Tenant, User]]:
        query = (
            select(Run, Tenant, User)
            .join(User, User.id == Run.user_id)
            .join(Tenant, Tenant.id == Run.tenant_id)
            .where(Run.status.in_(("queued", "running")))
            .order_by(Run.created_at)
        )
        with self.db.session() as s:
            return [(r, t, u) for r, t, u in s.execute(query)]

    def _run_events(self, run_id: str) -> list[Event]:
        return [parse_event(record.data) for record in stored_records(self.db, run_id)]


def _with_files(question: str, files: list[str]) -> str:
    if not files:
        return question
    return f"{question}\n\nFiles for this question (in the current folder): {', '.join(files)}"
