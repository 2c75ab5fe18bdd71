"""The run journal: every event is committed to the database before anyone can see it.

Runs append events without waiting (an agent step is not slowed by a disk flush); one writer task
commits everything appended so far in one transaction (group commit), then publishes those events to the
run's :class:`Channel`, where the event streams of clients read them. So a client never sees an event
that a crash could take back, and what a crash takes back (appended, not yet committed) was seen by no one.
Each event gets the next sequence number of its run (from 1), which is its server-sent event id.

A run's row (status, answer, counters) is updated in the same transaction as the events that change it.

A run of a user who has secrets is opened with that user's redactor: every event and every text of the
run's row is redacted here, before it is stored or published (:mod:`thinkbox.service.secrets.redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from thinkbox.agent.events import Event
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import RUN_ENDED, Run, RunEvent
from thinkbox.service.secrets.redact import Redactor

log = logging.getLogger(__name__)
TERMINAL_TYPE = "run_finished"
_RETRY_S = (0.05, 0.2, 1.0, 2.0)


@dataclass(frozen=True)
class Record:
    """A committed event as clients get it."""

    seq: int
    type: str
    data: str  # the event's JSON


@dataclass
class Channel:
    """The committed events of one run live in this process, for its followers."""

    first_seq: int
    """Events before this one were committed by an earlier process: read them from the database."""
    records: list[Record] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, record: Record) -> None:
        self.records.append(record)
        self.done = self.done or record.type == TERMINAL_TYPE
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class _Pending:
    run_id: str
    record: Record
    created_at: float
    run_fields: dict[str, Any] | None


class Journal:
    """Group-committing event log over :class:`Database`. Start it inside the event loop that uses it."""

    def __init__(self, db: Database, *, linger_s: float = 0.002) -> None:
        self.db = db
        self.linger_s = linger_s
        """How long the writer waits after the first new event for more to join its commit."""
        self.inline = db.dialect == "sqlite"
        """SQLite commits (WAL, a fraction of a millisecond) run in the event loop's thread: a worker
        thread would hold the GIL for SQLAlchemy's Python while the loop waits for it. PostgreSQL's
        network round trip runs in a worker thread."""
        self._seq: dict[str, int] = {}
        self._channels: dict[str, Channel] = {}
        self._redactors: dict[str, Callable[[], Redactor]] = {}
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="journal-writer")

    async def aclose(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- writing ------------------------------------------------------------------------------------
    def open_run(
        self, run_id: str, last_seq: int = 0, redactor: Callable[[], Redactor] | None = None
    ) -> Channel:
        """Make ``run_id`` live here: its events so far end at ``last_seq``; ``redactor`` gives the run's
        owner's current redactor (their secrets)."""
        self._seq[run_id] = last_seq
        if redactor is not None:
            self._redactors[run_id] = redactor
        channel = self._channels[run_id] = Channel(first_seq=last_seq + 1)
        return channel

    def append(self, run_id: str, event: Event, **run_fields: Any) -> int:
        """Queue ``event`` of the live run ``run_id`` (and changes to its row); its sequence number."""
        seq = self._seq[run_id] = self._seq[run_id] + 1
        data = event.model_dump_json()
        redactor = self._redactor(run_id)
        if redactor:
            data, run_fields = redactor.json_text(data), redactor.data(run_fields)
        record = Record(seq, event.type, data)
        self._pending.append(_Pending(run_id, record, event.ts, run_fields or None))
        self._idle.clear()
        self._wake.set()
        return seq

    def update_run(self, run_id: str, **run_fields: Any) -> None:
        """Change the run's row in the next commit, after the events queued before."""
        redactor = self._redactor(run_id)
        if redactor:
            run_fields = redactor.data(run_fields)
        self._pending.append(_Pending(run_id, Record(0, "", ""), time.time(), run_fields))
        self._idle.clear()
        self._wake.set()

    def _redactor(self, run_id: str) -> Redactor | None:
        current = self._redactors.get(run_id)
        return current() if current is not None else None

    async def flush(self) -> None:
        """Wait until everything queued so far is committed and published."""
        while self._pending or not self._idle.is_set():
            await self._idle.wait()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                self._idle.set()
                continue
            await self._commit_with_retry(batch)
            for item in batch:
                channel = self._channels.get(item.run_id)
                if channel is not None and item.record.seq:
                    channel.publish(item.record)
            if not self._pending:
                self._idle.set()

    async def _commit_with_retry(self, batch: list[_Pending]) -> None:
        for attempt in range(len(_RETRY_S) + 1):
            try:
                if self.inline:
                    self._commit(batch)
                else:
                    await asyncio.to_thread(self._commit, batch)
                self.commits += 1
                return
            except Exception as exc:  # the database went away for a moment: nothing is published meanwhile
                wait = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                log.warning("journal commit failed (%s); retrying in %.2f s", exc, wait)
                await asyncio.sleep(wait)
        while True:  # keep trying: events must not be published uncommitted, nor dropped
            try:
                await asyncio.to_thread(self._commit, batch)
                return
            except Exception as exc:
                log.error("journal commit still failing: %s", exc)
                await asyncio.sleep(_RETRY_S[-1])

    def _commit(self, batch: list[_Pending]) -> None:
        rows = [
            {
                "run_id": p.run_id,
                "seq": p.record.seq,
                "type": p.record.type,
                "data": p.record.data,
                "created_at": p.created_at,
            }
            for p in batch
            if p.record.seq
        ]
        runs: dict[str, dict[str, Any]] = {}
        for p in batch:
            fields = runs.setdefault(p.run_id, {})
            if p.record.seq:
                fields["last_seq"] = p.record.seq
            if p.run_fields:
                fields.update(p.run_fields)
        with self.db.engine.begin() as connection:
            if rows:
                connection.execute(insert(RunEvent), rows)
            for run_id, fields in runs.items():
                if fields:
                    connection.execute(update(Run).where(Run.id == run_id).values(**fields))

    # -- reading ------------------------------------------------------------------------------------
    def channel(self, run_id: str) -> Channel | None:
        return self._channels.get(run_id)

    def close_run(self, run_id: str) -> None:
        """The run ended and its terminal event is committed: followers read it from the database from now."""
        self._channels.pop(run_id, None)
        self._seq.pop(run_id, None)
        self._redactors.pop(run_id, None)

    def stored(self, run_id: str, after: int, before: int | None = None) -> list[Record]:
        return stored_records(self.db, run_id, after, before)

    def _stored_and_ended(self, run_id: str, after: int) -> tuple[list[Record], bool]:
        records = self.stored(run_id, after)
        with self.db.session() as s:
            status = s.scalar(select(Run.status).where(Run.id == run_id))
        return records, status in RUN_ENDED

    async def follow(self, run_id: str, after: int = 0, *, poll_s: float = 0.5) -> AsyncIterator[Record]:
        """Every committed event of ``run_id`` after ``after``, as they come, to the terminal one."""
        last = after
        while True:
            channel = self._channels.get(run_id)
            if channel is None:  # not live here: what is stored is all there is (or a resume is coming)
                records, ended = await asyncio.to_thread(self._stored_and_ended, run_id, last)
                for record in records:
                    yield record
                    last = record.seq
                    if record.type == TERMINAL_TYPE:
                        return
                if ended:  # the client already has the terminal event
                    return
                await asyncio.sleep(poll_s)
                continue
            if last + 1 < channel.first_seq:
                for record in await asyncio.to_thread(self.stored, run_id, last, channel.first_seq):
                    yield record
                    last = record.seq
            changed = channel.changed
            for record in channel.records[max(0, last + 1 - channel.first_seq) :]:
                yield record
                last = record.seq
                if record.type == TERMINAL_TYPE:
                    return
            if self._channels.get(run_id) is channel:
                await changed.wait()


def stored_records(db: Database, run_id: str, after: int = 0, before: int | None = None) -> list[Record]:
    """Committed events of ``run_id`` with ``after < seq`` (``< before``), in order, from the database."""
    query = select(RunEvent.seq, RunEvent.type, RunEvent.data)
    query = query.where(RunEvent.run_id == run_id, RunEvent.seq > after)
    if before is not None:
        query = query.where(RunEvent.seq < before)
    with db.session() as s:
        return [Record(*row) for row in s.execute(query.order_by(RunEvent.seq))]
