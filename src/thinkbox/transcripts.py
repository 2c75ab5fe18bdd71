"""Transcripts: every run stored as JSON lines of its events, under ``<data_dir>/runs/<run_id>.jsonl``.

Writing::

    with TranscriptWriter(settings.data_dir) as transcript:
        async for event in run_agent(...):
            transcript.write(event)          # or: async for event in transcript.tee(run_agent(...))

An event is anything with ``.model_dump(mode="json")`` (the agent's pydantic events,
:mod:`thinkbox.agent.events`) or a plain dict, with a ``type`` field. Each line is written and flushed as
the event arrives, so a run stopped with Ctrl-C keeps everything up to that moment. The file is named after
the ``run_id`` of the ``run_started`` event; a writer given no id starts a new file at each new run (each
question of a chat is a run of its own).

Every function takes the data directory (``settings.data_dir``); transcripts live in its ``runs`` folder.

Reading: :func:`list_runs` (newest first), :func:`find_run` (an id or a unique prefix of one),
:func:`read_events` (tolerates a torn last line, or a damaged one) and :func:`summarize`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol, TypeVar

from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError

SUFFIX = ".jsonl"
RunStatus = Literal["answered", "limit", "error", "incomplete"]


class RunNotFound(ThinkboxError):
    """No stored run has the id (or the prefix) the user gave."""

    code = "run_not_found"


class _Dumpable(Protocol):
    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


EventLike = _Dumpable | dict[str, Any]
E = TypeVar("E")


def runs_dir(data_dir: Settings | Path) -> Path:
    """``<data_dir>/runs`` (given the settings or the data directory)."""
    return (data_dir.data_dir if isinstance(data_dir, Settings) else data_dir) / "runs"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _safe_id(run_id: str) -> str:
    """A run id usable as a file name (ids come from the agent; never let one climb out of the folder)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).lstrip(".")
    return cleaned or new_run_id()


def event_dict(event: EventLike) -> dict[str, Any]:
    data = dict(event) if isinstance(event, dict) else event.model_dump(mode="json")
    if "type" not in data:
        raise TypeError(f"a transcript event needs a 'type' field, got keys {sorted(data)}")
    return data


class TranscriptWriter:
    """Appends run events to ``<data_dir>/runs/<run_id>.jsonl``, one flushed line per event.

    With ``run_id`` every event goes to that one file; without, each ``run_started`` with a new id starts
    the file of that run."""

    def __init__(self, data_dir: Path, run_id: str | None = None) -> None:
        self.directory = runs_dir(data_dir)
        self.fixed_id = run_id is not None
        self.run_id = _safe_id(run_id) if run_id else None
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path | None:
        """The transcript file, once the first event has named the run."""
        return self.directory / f"{self.run_id}{SUFFIX}" if self.run_id else None

    def write(self, event: EventLike) -> None:
        data = event_dict(event)
        given = data.get("run_id") if data["type"] == "run_started" else None
        if not self.fixed_id and isinstance(given, str) and given and _safe_id(given) != self.run_id:
            self.close()
            self.run_id = _safe_id(given)
        if self._file is None:
            if self.run_id is None:
                self.run_id = new_run_id()
            self.directory.mkdir(parents=True, exist_ok=True)
            assert self.path is not None
            self._file = self.path.open("a", encoding="utf-8")
        data.setdefault("ts", time.time())
        self._file.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._file.flush()

    async def tee(self, events: AsyncIterator[E]) -> AsyncIterator[E]:
        """``events`` unchanged, each written on its way through."""
        async for event in events:
            self.write(event)  # type: ignore[arg-type]
            yield event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- reading


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a transcript; a line torn by a crash (or not yet finished) is skipped."""
    return list(_iter_events(path))


def _iter_events(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as f:  # bad bytes spoil their line, not the file
        for line in f:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "type" in data:
                yield data


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    path: Path
    started: float
    """Unix time of the first event (the file's time if no event has one)."""
    question: str
    answer: str | None
    steps: int
    status: RunStatus
    model: str = ""
    duration_s: float | None = None
    tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": self.started,
            "question": self.question,
            "answer": self.answer,
            "steps": self.steps,
            "status": self.status,
            "model": self.model,
            "duration_s": self.duration_s,
            "tokens": self.tokens,
            "path": str(self.path),
        }


def summarize(path: Path, events: list[dict[str, Any]] | None = None) -> RunSummary:
    """What ``runs list`` shows about one transcript."""
    events = read_events(path) if events is None else events
    started = next((e["ts"] for e in events if isinstance(e.get("ts"), int | float)), None)
    question, model, answer = "", "", None
    steps_seen, steps, status = 0, None, "incomplete"
    duration: float | None = None
    tokens: int | None = None
    for e in events:
        kind = e["type"]
        if kind == "run_started" and not question:
            question, model = str(e.get("question", "")), str(e.get("model", ""))
        elif kind == "step_started":
            steps_seen = max(steps_seen, int(e.get("step", 0)))
        elif kind in ("final_answer", "limit_reached", "run_error", "run_finished"):
            status = _status_of(e, status)
            steps = e.get("steps", steps)
            duration = e.get("duration_s", duration)
            tokens = e.get("tokens", tokens)
            if kind == "final_answer":
                answer = str(e.get("answer", ""))
            elif kind == "run_finished" and e.get("answer") is not None:
                answer = str(e["answer"])
    return RunSummary(
        run_id=path.name.removesuffix(SUFFIX),
        path=path,
        started=float(started) if started is not None else path.stat().st_mtime,
        question=question,
        answer=answer,
        steps=int(steps) if steps is not None else steps_seen,
        status=status,  # type: ignore[arg-type]
        model=model,
        duration_s=duration,
        tokens=tokens,
    )


def _status_of(event: dict[str, Any], current: str) -> str:
    kind = event["type"]
    if kind == "run_finished":
        status = event.get("status")
        return status if status in ("answered", "limit", "error") else current
    return {"final_answer": "answered", "limit_reached": "limit", "run_error": "error"}[kind]


def list_runs(data_dir: Path) -> list[RunSummary]:
    """Every stored run, newest first."""
    directory = runs_dir(data_dir)
    if not directory.is_dir():
        return []
    summaries = [summarize(p) for p in directory.glob(f"*{SUFFIX}") if p.is_file()]
    return sorted(summaries, key=lambda s: s.started, reverse=True)


def find_run(data_dir: Path, run_id: str) -> Path:
    """The transcript of ``run_id`` or of the one run whose id starts with it."""
    directory = runs_dir(data_dir)
    exact = directory / f"{_safe_id(run_id)}{SUFFIX}"
    if run_id and exact.is_file():
        return exact
    matches = (
        sorted(p for p in directory.glob(f"*{SUFFIX}") if p.name.startswith(run_id) and p.is_file())
        if directory.is_dir()
        else []
    )
    if len(matches) == 1 and run_id:
        return matches[0]
    if not matches or not run_id:
        raise RunNotFound(
            f"no stored run has the id {run_id!r} in {directory}; `thinkbox runs list` shows the ids "
            "(runs are kept under THINKBOX_DATA_DIR/runs)"
        )
    names = ", ".join(p.name.removesuffix(SUFFIX) for p in matches[:10])
    raise RunNotFound(f"the id prefix {run_id!r} matches {len(matches)} runs ({names}); give more characters")
