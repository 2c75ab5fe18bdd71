"""Redaction: every form of a secret's value (:func:`~.grant.forms`) becomes ``[secret NAME]``.

A :class:`Redactor` is built from a user's secrets. The service applies it at its choke points, so that
for a user who has secrets nothing a run or session stores or sends holds a value:

- :class:`SessionRedaction` is the sandbox session's output filter
  (:class:`~thinkbox.sandbox.session.OutputFilter`): every output chunk, display item, result and error
  is redacted as it leaves the session, before the agent feeds it to the model, before a run journals it
  and before ``/v1/sessions``, MCP or the OpenAI-compatible API send it;
- the journal redacts every event of a run (and the run's row) before it is stored or streamed: the
  model's own text, the answer, errors; transcripts and notebooks are made from those events;
- :class:`LogRedaction` redacts log records (message, arguments, traceback) of the whole process.

A value split over two output chunks: :class:`StreamRedaction` holds back the end of a chunk that could be
the start of a form of a value (only that much, usually nothing) and hands it out with the next chunk, or
at the end of the execution; so chunks are redacted as if the output had come in one piece. Redaction is
best effort: a value that code transforms otherwise (reversed, split over lines, encrypted) is not found.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from thinkbox.sandbox.types import DisplayData, ExecutionResult, OutputChunk
from thinkbox.service.secrets.grant import forms

M = TypeVar("M", bound=BaseModel)
StreamItem = OutputChunk | DisplayData | ExecutionResult


def mark(name: str) -> str:
    """What a value is replaced with."""
    return f"[secret {name}]"


class Redactor:
    """Replaces every form of the given values with ``[secret NAME]``; empty (falsy) without values."""

    def __init__(self, values: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = values.items() if isinstance(values, Mapping) else values
        self.names: dict[str, str] = {}
        """form -> the name of its secret"""
        for name, value in pairs:
            for form in forms(value):
                self.names.setdefault(form, name)
        self._forms = sorted(self.names, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in self._forms)) if self._forms else None
        self.longest = len(self._forms[0]) if self._forms else 0

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: mark(self.names[m.group()]), text)

    def found(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(text) is not None

    def data(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, strings...) with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def model(self, obj: M) -> M:
        """``obj`` with every string field redacted (the same object when nothing changed)."""
        if self._pattern is None:
            return obj
        dumped = obj.model_dump()
        redacted = self.data(dumped)
        return obj if redacted == dumped else type(obj).model_validate(redacted)

    def json_text(self, text: str) -> str:
        """A JSON document with every string in it redacted (the same text when nothing changed)."""
        if self._pattern is None:
            return text
        loaded = json.loads(text)
        redacted = self.data(loaded)
        return text if redacted == loaded else json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))

    def held_back(self, text: str) -> int:
        """How many characters at the end of ``text`` could be the start of a form (to wait for more)."""
        best = 0
        for form in self._forms:
            start = max(0, len(text) - len(form) + 1, 0)
            if len(text) - start <= best:
                continue
            first = form[0]
            pos = text.find(first, start)
            while pos >= 0 and len(text) - pos > best:
                if form.startswith(text[pos:]):
                    best = len(text) - pos
                    break
                pos = text.find(first, pos + 1)
        return best


class StreamRedaction:
    """One output stream redacted piece by piece, as if it had come at once (see the module's docstring)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.pending = ""

    def feed(self, text: str) -> str:
        """What can be handed out now of everything so far."""
        buf = self.pending + text
        cut = len(buf) - self.redactor.held_back(buf)
        pattern = self.redactor._pattern
        if pattern is not None:
            for match in pattern.finditer(buf):  # a whole form across the cut waits too
                if match.start() < cut < match.end():
                    cut = match.start()
                    break
        self.pending = buf[cut:]
        return self.redactor.text(buf[:cut])

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self.redactor.text(rest)


class _ExecutionRedaction:
    """The filter of one execution's items (output chunks, displays, then the result)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.streams: dict[str, StreamRedaction] = {}

    def __call__(self, item: StreamItem) -> list[StreamItem]:
        if isinstance(item, OutputChunk):
            stream = self.streams.setdefault(item.name, StreamRedaction(self.redactor))
            text = stream.feed(item.text)
            return [OutputChunk(name=item.name, text=text)] if text else []
        if isinstance(item, ExecutionResult):
            out: list[StreamItem] = []
            for name, stream in self.streams.items():
                if rest := stream.flush():
                    out.append(OutputChunk(name=name, text=rest))  # type: ignore[arg-type]
            return [*out, self.redactor.model(item)]
        return [self.redactor.model(item)]


class SessionRedaction:
    """The output filter of one user's sandbox sessions: redacts with that user's current secrets."""

    def __init__(self, current: Callable[[], Redactor]) -> None:
        self.current = current

    def stream(self) -> Callable[[StreamItem], list[StreamItem]]:
        redactor = self.current()
        if not redactor:
            return _unchanged
        return _ExecutionRedaction(redactor)

    def value(self, obj: M) -> M:
        return self.current().model(obj)


def _unchanged(item: StreamItem) -> list[StreamItem]:
    return [item]


class LogRedaction(logging.Filter):
    """Redacts log records with the values the service's secret stores know. Installed on the process's
    log record factory (:meth:`install`), so records of every logger and handler pass through it, those of
    handlers added later (a test's log capture) too."""

    def __init__(self) -> None:
        super().__init__()
        self._sources: list[Callable[[], Redactor]] = []
        self._lock = threading.Lock()
        self._installed = False

    def add(self, source: Callable[[], Redactor]) -> None:
        with self._lock:
            self._sources.append(source)
            if not self._installed:
                previous = logging.getLogRecordFactory()

                def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                    record = previous(*args, **kwargs)
                    self.filter(record)
                    return record

                logging.setLogRecordFactory(factory)
                self._installed = True

    def remove(self, source: Callable[[], Redactor]) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def filter(self, record: logging.LogRecord) -> bool:
        for source in list(self._sources):
            redactor = source()
            if redactor:
                _redact_record(record, redactor)
        return True


def _redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it later, as it would without us
        return
    if redactor.found(message):
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redactor.text(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: redactor.text(v) if isinstance(v, str) else v for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = redactor.text(record.msg)
        try:
            still = redactor.found(record.getMessage())
        except Exception:
            still = True
        if still:  # the value came from an argument that is not a string: keep the redacted text alone
            record.msg, record.args = redactor.text(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redactor.text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redactor.text(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.text(record.stack_info)


LOGS = LogRedaction()
"""The process's one log redaction (logging is per process); each running service adds its store."""
