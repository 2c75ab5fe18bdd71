"""Live rendering of agent events with rich: thinking, executing, output, result, answer, summary.

Each kind of content has its own look: the thought streams dim and italic, code is syntax-highlighted in a
panel, stdout is printed raw as it arrives (stderr in red), the result of an execution is one coloured
line, the final answer is a green panel and a stopped run a yellow one. Figures are written to files and
their paths shown. Rendering is a consumer of events; the loop knows nothing about it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from thinkbox.agent.events import (
    ActionParsed,
    AnswerChecked,
    CodeRejected,
    CodeStarted,
    DisplayProduced,
    Event,
    ExecutionFinished,
    FilesPreviewed,
    FinalAnswer,
    LimitReached,
    NetworkRequest,
    Notice,
    OutputChunk,
    ParseFailed,
    PartTested,
    PlanMade,
    RouteChosen,
    RunError,
    RunFinished,
    RunResumed,
    RunStarted,
    StepStarted,
    ThoughtDelta,
    ToolsHarvested,
)
from thinkbox.describe import describe

_SUFFIX = {"image/png": ".png", "image/svg+xml": ".svg"}

# C0 controls but tab and newline (carriage return too: progress bars rewrite their line with it, and it
# cannot start an escape sequence), DEL and the C1 controls (U+009B is a one-character CSI).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A, 0x0D)}


def terminal_safe(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``, so that no escape sequence from a sandbox
    (or a model) reaches the terminal: ESC, BEL, the C1 controls and the rest become visible text."""
    return text.translate(_CONTROL)


def save_figure(event: DisplayProduced, directory: Path, index: int) -> Path | None:
    """Write the image of a display event (png, else svg) to ``directory``; None when it holds no image."""
    mime = next((m for m in _SUFFIX if m in event.mime), None)
    if mime is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step{event.step}-figure{index}{_SUFFIX[mime]}"
    data = event.mime[mime]
    if mime == "image/png":
        path.write_bytes(base64.b64decode(data))
    else:
        path.write_text(data, encoding="utf-8")
    return path


class FigureSaver:
    """Saves the figures of one run under ``root/<run_id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_id = "run"
        self.saved: list[Path] = []

    def __call__(self, event: Event) -> Path | None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        if not isinstance(event, DisplayProduced):
            return None
        path = save_figure(event, self.root / self.run_id, len(self.saved) + 1)
        if path is not None:
            self.saved.append(path)
        return path


class Renderer:
    """Renders events to a rich Console as they come."""

    def __init__(self, console: Console, figures: FigureSaver | None = None) -> None:
        self.console = console
        self.figures = figures
        self._thinking = False
        self._thought_shown = False
        self._line_open = False  # the last thing written did not end with a newline
        self._figure: Path | None = None

    def __call__(self, event: Event) -> None:
        if not isinstance(event, ThoughtDelta):
            self._end_thought()
        if not isinstance(event, OutputChunk | ThoughtDelta):
            self._end_line()
        self._figure = self.figures(event) if self.figures is not None else None
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)

    # -- plumbing ---------------------------------------------------------------------------------
    def _write(self, text: str, style: str = "") -> None:
        text = terminal_safe(text)
        self.console.print(Text(text, style=style, end=""), end="", soft_wrap=True, highlight=False)
        if text:
            self._line_open = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._line_open:
            self.console.print()
            self._line_open = False

    def _end_thought(self) -> None:
        if self._thinking:
            self._thinking = False
            self._end_line()

    # -- events -----------------------------------------------------------------------------------
    def _on_run_resumed(self, e: RunResumed) -> None:
        again = f"{e.replayed_cells} cells run again"
        self._write(f"resumed after an interruption ({again}): {e.message}\n", "dim")

    def _on_run_started(self, e: RunStarted) -> None:
        files = f" · files: {', '.join(e.files)}" if e.files else ""
        line = terminal_safe(f"thinkbox · model {e.model} · sandbox {e.sandbox}{files}")
        self.console.print(Text(line, style="dim"))

    def _on_route_chosen(self, e: RouteChosen) -> None:
        self._note(e, "cyan")

    def _on_plan_made(self, e: PlanMade) -> None:
        self._note(e, "cyan")

    def _on_part_tested(self, e: PartTested) -> None:
        self._note(e, "green" if e.passed else "bold yellow", "✓ " if e.passed else "✗ ")

    def _note(self, e: Event, style: str, mark: str = "") -> None:
        self.console.print(Text(terminal_safe(mark + (describe(e) or "")), style=style), soft_wrap=True)

    def _on_step_started(self, e: StepStarted) -> None:
        self._thought_shown = False
        self.console.rule(Text(f"step {e.step}", style="bold"), style="grey50")

    def _on_thought_delta(self, e: ThoughtDelta) -> None:
        if not self._thinking:
            self._thinking = self._thought_shown = True
            self._write("thinking ", "bold magenta")
        self._write(e.text, "dim italic")

    def _on_parse_failed(self, e: ParseFailed) -> None:
        self.console.print(
            Text(terminal_safe(f"! reply {e.attempt} not used: {e.error}"), style="yellow"), soft_wrap=True
        )

    def _on_action_parsed(self, e: ActionParsed) -> None:
        if e.thought and not self._thought_shown:
            self.console.print(
                Text("thinking ", style="bold magenta") + Text(terminal_safe(e.thought), style="dim italic")
            )
        if e.repairs:
            self.console.print(Text(terminal_safe(f"(repaired: {'; '.join(e.repairs)})"), style="dim"))

    def _on_code_started(self, e: CodeStarted) -> None:
        lexer = {"js": "javascript", "sh": "bash"}.get(e.language, "python")
        code = Syntax(
            terminal_safe(e.code), lexer, theme="ansi_dark", background_color="default", word_wrap=True
        )
        title = "executing" if e.language == "py" else f"executing ({e.language})"
        self.console.print(Panel(code, title=title, title_align="left", border_style="cyan"))

    def _on_files_previewed(self, e: FilesPreviewed) -> None:
        line = terminal_safe(f"files described to the model: {', '.join(e.files)}")
        self.console.print(Text(line, style="dim"), soft_wrap=True)

    def _on_code_rejected(self, e: CodeRejected) -> None:
        code = Syntax(terminal_safe(e.code), "python", theme="ansi_dark", background_color="default",
                      word_wrap=True)  # fmt: skip
        self.console.print(Panel(code, title="not run", title_align="left", border_style="yellow"))
        for problem in e.problems:
            self.console.print(Text(terminal_safe(f"✗ {problem}"), style="bold yellow"), soft_wrap=True)

    def _on_notice(self, e: Notice) -> None:
        if e.kind == "docs":
            head, _, body = e.message.partition("\n")
            self.console.print(Text("docs ", style="bold") + Text(terminal_safe(body or head), style="dim"))
        elif e.kind == "repeat":
            text = "↻ the same code and output as an earlier step: not shown to the model again"
            self.console.print(Text(text, style="yellow"))
        else:
            self.console.print(Text(terminal_safe(f"note: {e.message}"), style="dim yellow"), soft_wrap=True)

    def _on_output_chunk(self, e: OutputChunk) -> None:
        self._write(e.text, "red" if e.name == "stderr" else "")

    def _on_display_produced(self, e: DisplayProduced) -> None:
        if self._figure is not None:
            self.console.print(Text(f"figure saved: {self._figure}", style="blue"), soft_wrap=True)

    def _on_execution_finished(self, e: ExecutionFinished) -> None:
        r = e.result
        seconds = f"{r.duration_ms / 1000:.2f} s"
        if r.result is not None:
            self.console.print(Text("value ", style="bold") + Text(terminal_safe(r.result)))
        for line in e.assigned.splitlines():
            self.console.print(Text("assigned ", style="bold") + Text(terminal_safe(line)), soft_wrap=True)
        if r.killed:
            note = "; restarted" if e.session_restarted else ""
            self.console.print(
                Text(f"✗ interpreter killed after {seconds}, variables lost{note}", style="red")
            )
        elif r.timed_out:
            self.console.print(
                Text(f"⏱ interrupted at the time limit ({seconds}); variables kept", style="yellow")
            )
        elif r.error is not None:
            self.console.print(
                Text(terminal_safe(f"✗ {r.error.type}: {r.error.message}"), style="bold red"), soft_wrap=True
            )
        else:
            self.console.print(Text(f"✓ ran in {seconds}", style="green"))

    def _on_network_request(self, e: NetworkRequest) -> None:
        used = f" · secrets {', '.join(e.secrets)}" if e.secrets else ""
        where = f"{e.method} {e.host}:{e.port}{e.path}"
        if e.refused:
            line, style = f"⛔ {where} refused: {e.reason}", "yellow"
        else:
            size = f"{e.bytes_up:,} B up · {e.bytes_down:,} B down"
            line, style = (
                f"↔ {where} → {e.status or e.reason} · {size} · {e.duration_ms:.0f} ms{used}",
                "blue",
            )
        self.console.print(Text(terminal_safe(line), style=style), soft_wrap=True)

    def _on_answer_checked(self, e: AnswerChecked) -> None:
        checks = " and ".join(e.checks)
        if e.passed:
            self.console.print(Text(f"✓ answer checked ({checks})", style="green"))
            return
        head = "✗ answer checked: asking the model once more" if e.retry else f"note: {e.note}"
        self.console.print(Text(terminal_safe(head), style="yellow"), soft_wrap=True)
        for problem in e.problems if e.retry else []:
            self.console.print(Text(terminal_safe(f"  {problem}"), style="yellow"), soft_wrap=True)

    def _on_final_answer(self, e: FinalAnswer) -> None:
        body = Text(terminal_safe(e.answer), style="bold")
        self.console.print(Panel(body, title="answer", title_align="left", border_style="green"))

    def _on_tools_harvested(self, e: ToolsHarvested) -> None:
        for t in e.tools:
            if t.outcome == "saved":
                line, style = (
                    f"🔧 saved as a tool: {t.function} (version {t.version}, {t.tests} tests passed)",
                    "blue",
                )
            else:
                line, style = (
                    f"🔧 {t.function}: {t.outcome}" + (f" ({t.reason.splitlines()[0]})" if t.reason else ""),
                    "dim",
                )
            self.console.print(Text(terminal_safe(line), style=style), soft_wrap=True)
        self.console.print(Text(f"tool harvest took {e.duration_s:.1f} s", style="dim"))

    def _on_limit_reached(self, e: LimitReached) -> None:
        self.console.print(
            Panel(Text(terminal_safe(e.message)), title="stopped", title_align="left", border_style="yellow")
        )

    def _on_run_error(self, e: RunError) -> None:
        self.console.print(
            Text(terminal_safe(f"error ({e.code}): {e.message}"), style="bold red"), soft_wrap=True
        )

    def _on_run_finished(self, e: RunFinished) -> None:
        steps = f"{e.steps} step{'s' if e.steps != 1 else ''}"
        line = f"{steps} · {e.duration_s:.1f} s · {e.tokens:,} tokens · run {e.run_id}"
        if e.feedback:
            line += " · " + ", ".join(f"{k} {v}" for k, v in e.feedback.items())
        self.console.print(Text(line, style="dim"))


def event_json(event: Event, figure: Path | None = None) -> str:
    """One JSON line for ``--json``; a saved figure's path is added as ``saved_to``."""
    data = event.model_dump(mode="json")
    if figure is not None:
        data["saved_to"] = str(figure)
    return json.dumps(data, ensure_ascii=False)
