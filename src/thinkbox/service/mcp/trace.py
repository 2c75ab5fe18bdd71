"""What an MCP client gets back from ``ask``: the answer and a short trace of the run, built from its events.

The same events as every other renderer (:mod:`thinkbox.agent.events`); nothing here runs the agent. Code
and outputs are trimmed (head and tail kept) so that a client's model is not flooded; the whole run stays
in the service (``GET /v1/runs/{id}/events``, the notebook).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from thinkbox.agent.events import (
    ActionParsed,
    CodeRejected,
    DisplayProduced,
    Event,
    ExecutionFinished,
    LimitReached,
    OutputChunk,
    ParseFailed,
    RunError,
    RunFinished,
    StepStarted,
)
from thinkbox.describe import describe

CODE_CHARS = 2000
OUTPUT_CHARS = 1500
MAX_IMAGES = 4
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


class TraceStep(BaseModel):
    step: int
    thought: str = ""
    code: str = Field("", description="The code the step ran (trimmed).")
    output: str = Field("", description="stdout, stderr and the last value (trimmed).")
    error: str | None = Field(None, description="The exception the code raised, if any.")


class AskResult(BaseModel):
    answer: str | None = Field(description="The final answer; null when the run ended without one.")
    status: str = Field(description="answered, limit, error or cancelled.")
    message: str = Field("", description="Why there is no answer (which limit, which error).")
    run_id: str
    session_id: str | None = Field(
        description="The session the code ran in: pass it to ask or run_code to go on with its variables."
    )
    steps: int
    tokens: int
    duration_s: float
    trace: list[TraceStep]


def trim(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit:,} characters cut ...]\n{text[-tail:]}"


class Trace:
    """Folds a run's events into an :class:`AskResult`; :meth:`feed` says what to report as progress."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: dict[int, TraceStep] = {}
        self.outputs: dict[int, list[str]] = {}
        self.images: list[tuple[str, str]] = []
        self.step = 0
        self.finished: RunFinished | None = None
        self.message = ""

    def _at(self, step: int) -> TraceStep:
        return self.steps.setdefault(step, TraceStep(step=step))

    def feed(self, event: Event) -> str | None:
        """Take one event; a progress message when a step starts or its code has run, else None."""
        if isinstance(event, StepStarted):
            self.step = event.step
            return f"step {event.step}: thinking"
        if isinstance(event, ActionParsed):
            step = self._at(event.step)
            step.thought, step.code = event.thought, trim(event.code, CODE_CHARS)
        elif isinstance(event, ParseFailed):
            self._at(event.step).error = f"the reply was not a valid action: {trim(event.error, 300)}"
        elif isinstance(event, OutputChunk):
            self.outputs.setdefault(event.step, []).append(event.text)
        elif isinstance(event, DisplayProduced):
            mime = next((m for m in IMAGE_TYPES if m in event.mime), None)
            if mime is not None and len(self.images) < MAX_IMAGES:
                self.images.append((mime, event.mime[mime]))
        elif isinstance(event, ExecutionFinished):
            return self._executed(event)
        elif isinstance(event, CodeRejected):
            self._at(event.step).error = trim("not run: " + "; ".join(event.problems), OUTPUT_CHARS)
            return f"step {event.step}: the code was not run (a check found a problem)"
        elif isinstance(event, LimitReached | RunError):
            self.message = event.message
        elif isinstance(event, RunFinished):
            self.finished = event
        return describe(event)  # the route, a plan, a part's test, the answer's check: None for others

    def _executed(self, event: ExecutionFinished) -> str:
        step, result = self._at(event.step), event.result
        parts = self.outputs.pop(event.step, [])
        if result.result is not None:
            parts.append(f"Out: {result.result}")
        step.output = trim("".join(parts), OUTPUT_CHARS)
        if result.error is not None:
            step.error = trim(f"{result.error.type}: {result.error.message}", OUTPUT_CHARS)
            return f"step {event.step}: the code raised {result.error.type}"
        if result.timed_out or result.killed:
            step.error = "the code timed out" if result.timed_out else "the interpreter was killed"
            return f"step {event.step}: {step.error}"
        return f"step {event.step}: the code ran"

    def result(self, session_id: str | None) -> AskResult:
        end = self.finished
        return AskResult(
            answer=end.answer if end is not None else None,
            status=end.status if end is not None else "error",
            message=self.message or ("" if end is not None else "the run ended without a last event"),
            run_id=self.run_id,
            session_id=session_id,
            steps=end.steps if end is not None else self.step,
            tokens=end.tokens if end is not None else 0,
            duration_s=end.duration_s if end is not None else 0.0,
            trace=[self.steps[n] for n in sorted(self.steps)],
        )


def as_text(result: AskResult) -> str:
    """The result as a model reads it: the answer first, then the trace."""
    if result.answer is not None:
        lines = [result.answer]
    else:
        lines = [f"No answer ({result.status}): {result.message or 'see the trace'}"]
    lines.append(f"\n[run {result.run_id}, session {result.session_id}, {result.steps} steps]")
    for step in result.trace:
        lines.append(f"\n## step {step.step}")
        if step.thought:
            lines.append(f"thought: {step.thought}")
        if step.code:
            lines.append(f"```python\n{step.code}\n```")
        if step.output:
            lines.append(f"output:\n{step.output}")
        if step.error:
            lines.append(f"error: {step.error}")
    return "\n".join(lines)
