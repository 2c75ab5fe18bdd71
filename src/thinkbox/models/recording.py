"""``RecordingModel``: the same interface, appending each request and its reply to a JSON-lines file.

One line per call::

    {"ts": ..., "model": "openai:gpt-4o-mini", "request": {"messages": [...], "json_schema": ..., ...},
     "reply": {"text": ..., "usage": {...}, "finish_reason": ..., "constrained": ...}, "duration_s": ...}

A failed call has ``"error": {"code": ..., "message": ...}`` instead of ``reply``. :func:`scripted_replies`
turns a recording into the reply list of a :class:`~thinkbox.models.scripted.ScriptedModel`, so a real
session becomes a test fixture.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from thinkbox.errors import ThinkboxError
from thinkbox.models.base import ModelBackend, ModelEvent, ModelReply, ModelRequest


class RecordingModel:
    """Streams ``inner`` unchanged and appends one JSON line per call to ``path``."""

    def __init__(self, inner: ModelBackend, path: Path | str) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = Path(path)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        started = time.time()
        record: dict[str, Any] = {"ts": started, "model": self.name, "request": dataclasses.asdict(request)}
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, ModelReply):
                    record["reply"] = dataclasses.asdict(event)
                yield event
        except ThinkboxError as exc:
            record["error"] = {"code": exc.code, "message": exc.message}
            raise
        finally:
            if "reply" in record or "error" in record:
                record["duration_s"] = round(time.time() - started, 3)
                self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_recording(path: Path | str) -> list[dict[str, Any]]:
    """The records of a recording file, skipping a torn last line."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def scripted_replies(path: Path | str) -> list[str]:
    """The reply texts of a recording, in order: the ``script`` of a ScriptedModel that replays it."""
    return [r["reply"]["text"] for r in read_recording(path) if "reply" in r]
