"""The loop's feedback: what the model is told besides its code's output, each piece behind a setting.

- file previews at the start (:mod:`~thinkbox.agent.previews`, agent.previews),
- lint before running Python (:mod:`~thinkbox.agent.lint`, agent.lint),
- repeats: a step that repeats an earlier one's code and output (:mod:`~thinkbox.agent.repeats`,
  agent.repeats),
- live documentation after a TypeError, AttributeError or KeyError (:mod:`~thinkbox.agent.live_docs`,
  agent.live_docs).

:class:`Feedback` holds them for one run and counts how often each fired (``RunFinished.feedback``); the
loop calls it at four points and otherwise knows nothing of them.
"""

from __future__ import annotations

from collections import Counter

from thinkbox.agent import lint, live_docs, previews, repeats
from thinkbox.agent.events import CodeRejected, Event, FilesPreviewed, Notice
from thinkbox.config import AgentSettings
from thinkbox.models.base import Message
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import ExecutionResult


class Feedback:
    def __init__(self, settings: AgentSettings, session: Session) -> None:
        self.settings = settings
        self.session = session
        self.repeats = repeats.Repeats()
        self.counts: Counter[str] = Counter()

    async def start(self, history: list[Message], files: list[str]) -> tuple[str, list[Event]]:
        """At a run's start: the previews of ``files`` (the workspace's visible files) not described
        earlier in ``history`` (text for the model, '' for none), and events."""
        events: list[Event] = []
        if self.settings.lint and self.settings.language in ("py", "auto") and not lint.AVAILABLE:
            events.append(Notice(kind="lint_unavailable", message=lint.UNAVAILABLE_NOTE))
        if not self.settings.previews:
            return "", events
        paths = previews.pending(files, history)
        if not paths:
            return "", events
        found = await previews.preview(self.session, paths, self.settings.preview_tokens)
        if found is None:
            events.append(Notice(kind="preview_failed", message="the files could not be read for a preview"))
            return "", events
        text, described = found
        self.counts["previewed"] += len(described)
        return text, [FilesPreviewed(files=described, text=text), *events]

    async def check(self, step: int, code: str, language: str) -> CodeRejected | None:
        """Before running: the rejection of code that cannot work (agent.lint), else None."""
        if not self.settings.lint or language != "py":
            return None
        found = await lint.check(self.session, code)
        if not found:
            return None
        self.counts["lint"] += 1
        return CodeRejected(step=step, code=code, problems=found, observation=lint.observation(found))

    def refusal(self, code: str, language: str) -> str | None:
        """Why the model's code is refused before running (it repeated its output already), else None."""
        why = self.repeats.refusal(code, language) if self.settings.repeats else None
        self.counts["repeat_refused"] += why is not None
        return why

    async def after(self, step: int, code: str, language: str, result: ExecutionResult) -> list[Notice]:
        """After running: documentation for an error, or the note that the step repeated an earlier one.
        The loop adds a docs notice's message to the observation and replaces it for a repeat."""
        if self.settings.live_docs and language == "py" and result.error is not None:
            docs = await live_docs.lookup(self.session, code, result)
            if docs:
                self.counts["docs"] += 1
                return [Notice(step=step, kind="docs", message=docs)]
        earlier = self.repeats.after(step, code, language, result) if self.settings.repeats else None
        if earlier is None:
            return []
        self.counts["repeat"] += 1
        return [Notice(step=step, kind="repeat", message=repeats.observation(step, earlier))]

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.counts.items()) if v}
