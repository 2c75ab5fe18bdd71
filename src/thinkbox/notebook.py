"""A transcript as a Jupyter notebook (nbformat v4).

The question becomes a heading; each step's thought a markdown cell; its code a code cell carrying what the
code printed (stream outputs, in the order they came), the figures and rich values (``display_data``), the
value of the last expression (``execute_result``) and the error with its traceback (``error``). The final
answer, or why the run stopped, closes the notebook.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from pydantic import ValidationError

from thinkbox.agent.events import EVENT_ADAPTER
from thinkbox.describe import NOTE_TYPES, describe
from thinkbox.transcripts import read_events

_nbformat: Any = nbformat  # nbformat has no type hints; calls through this alias are unchecked
new_notebook = _nbformat.v4.new_notebook
new_markdown_cell = _nbformat.v4.new_markdown_cell
new_code_cell = _nbformat.v4.new_code_cell
new_output = _nbformat.v4.new_output


def transcript_to_notebook(events: Iterable[dict[str, Any]]) -> NotebookNode:
    """Build the notebook of a run's events (dicts with a ``type``, as stored in a transcript)."""
    builder = _Builder()
    for event in events:
        builder.add(event)
    notebook: NotebookNode = builder.notebook
    return notebook


def export_notebook(transcript: Path, out: Path) -> NotebookNode:
    """Write the notebook of ``transcript`` to ``out`` (validated) and return it."""
    nb = transcript_to_notebook(read_events(transcript))
    nbformat.validate(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    _nbformat.write(nb, str(out))
    return nb


class _Builder:
    def __init__(self) -> None:
        self.notebook = new_notebook(
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            }
        )
        self.cells: list[NotebookNode] = self.notebook.cells
        self.code_cell: NotebookNode | None = None
        self.code_raw = ""
        self.code_step: int | None = None
        self.streamed = False
        self.execution_count = 0

    def add(self, e: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{e.get('type')}", None)
        if handler is not None:
            handler(e)
        elif e.get("type") in NOTE_TYPES:
            with contextlib.suppress(ValidationError):  # a transcript of another version: left out
                self._markdown(f"> *{describe(EVENT_ADAPTER.validate_python(e))}*")

    def _markdown(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text))

    def _on_run_started(self, e: dict[str, Any]) -> None:
        when = ""
        if isinstance(e.get("ts"), int | float):
            when = " · " + datetime.fromtimestamp(e["ts"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            f"# {e.get('question', '')}",
            "",
            f"*thinkbox run `{e.get('run_id', '')}` · model `{e.get('model', '')}`{when}*",
        ]
        if e.get("files"):
            lines += ["", "Files in the workspace: " + ", ".join(f"`{f}`" for f in e["files"])]
        self._markdown("\n".join(lines))
        self.notebook.metadata.setdefault(
            "thinkbox", {"run_id": e.get("run_id"), "question": e.get("question")}
        )

    def _on_parse_failed(self, e: dict[str, Any]) -> None:
        self._markdown(
            f"> *Step {e.get('step')}: the reply was not a valid action ({e.get('error', '')}); asked again.*"
        )

    def _on_action_parsed(self, e: dict[str, Any]) -> None:
        thought = str(e.get("thought") or "").strip()
        if thought:
            self._markdown(f"**Step {e.get('step', '?')}** · {e.get('action', '')}\n\n{thought}")
        if e.get("code"):
            self._start_code(str(e["code"]), e.get("step"), str(e.get("language") or "py"))

    def _on_code_started(self, e: dict[str, Any]) -> None:
        code, language = str(e.get("code", "")), str(e.get("language") or "py")
        if self.code_cell is None or self.code_step != e.get("step") or self.code_raw != code:
            self._start_code(code, e.get("step"), language)
        else:  # the action's cell: code_started says which language ran it (agent.language)
            self._set_language(self.code_cell, code, language)

    def _start_code(self, code: str, step: Any, language: str = "py") -> None:
        self.execution_count += 1
        self.code_cell = new_code_cell(code, execution_count=self.execution_count)
        self.code_raw = code
        self._set_language(self.code_cell, code, language)
        self.code_step = step
        self.streamed = False
        self.cells.append(self.code_cell)

    @staticmethod
    def _set_language(cell: NotebookNode, code: str, language: str) -> None:
        cell.source = _cell_source(code, language)
        if language != "py":
            cell.metadata["thinkbox"] = {"language": language}
        else:
            cell.metadata.pop("thinkbox", None)

    def _outputs(self) -> list[NotebookNode]:
        if self.code_cell is None:  # output without code (a transcript that lost its start)
            self._start_code("", None)
        assert self.code_cell is not None
        outputs: list[NotebookNode] = self.code_cell.outputs
        return outputs

    def _stream(self, name: str, text: str) -> None:
        outputs = self._outputs()
        if outputs and outputs[-1].output_type == "stream" and outputs[-1].name == name:
            outputs[-1].text += text
        else:
            outputs.append(new_output("stream", name=name, text=text))

    def _on_output_chunk(self, e: dict[str, Any]) -> None:
        self.streamed = True
        self._stream(str(e.get("name", "stdout")), str(e.get("text", "")))

    def _on_display_produced(self, e: dict[str, Any]) -> None:
        self._display(e.get("mime") or {})

    def _display(self, mime: dict[str, Any]) -> None:
        data = {k: _mime_value(k, v) for k, v in mime.items()}
        if data:
            self._outputs().append(new_output("display_data", data=data, metadata={}))

    def _on_execution_finished(self, e: dict[str, Any]) -> None:
        result: dict[str, Any] = e.get("result") or {}
        if not self.streamed:  # no chunks stored: the result's full output, before any figure
            printed = [
                new_output("stream", name=name, text=str(result[name]))
                for name in ("stdout", "stderr")
                if result.get(name)
            ]
            self._outputs()[:0] = printed
        for item in result.get("display") or []:
            self._display(item.get("mime") or {})
        outputs = self._outputs()
        if result.get("result") is not None:
            outputs.append(
                new_output(
                    "execute_result",
                    data={"text/plain": str(result["result"])},
                    metadata={},
                    execution_count=self.execution_count,
                )
            )
        error = result.get("error")
        if error:
            outputs.append(
                new_output(
                    "error",
                    ename=str(error.get("type", "Error")),
                    evalue=str(error.get("message", "")),
                    traceback=str(error.get("traceback", "")).splitlines(),
                )
            )
        notes = [
            text
            for flag, text in (
                ("timed_out", "the execution was stopped at its time limit"),
                ("killed", "the interpreter was killed"),
                ("interrupted", "the execution was interrupted"),
            )
            if result.get(flag)
        ]
        if e.get("session_restarted"):
            notes.append("the session was restarted: earlier variables are gone")
        if notes:
            self._stream("stderr", "[thinkbox: " + "; ".join(notes) + "]\n")
        self.code_cell = None

    def _on_files_previewed(self, e: dict[str, Any]) -> None:
        self._markdown(f"*What the model was told about the files:*\n\n```text\n{e.get('text', '')}\n```")

    def _on_code_rejected(self, e: dict[str, Any]) -> None:
        problems = "; ".join(str(p) for p in e.get("problems") or [])
        if self.code_cell is not None and self.code_step == e.get("step"):
            self._stream("stderr", f"[thinkbox: not run, a check before running found: {problems}]\n")
        else:
            self._markdown(f"> *Step {e.get('step')}: code not run ({problems}).*")
        self.code_cell = None

    def _on_notice(self, e: dict[str, Any]) -> None:
        if e.get("kind") in ("docs", "repeat"):
            self._markdown(
                f"> *Step {e.get('step')}, {e.get('kind')}:*\n\n```text\n{e.get('message', '')}\n```"
            )
        else:
            self._markdown(f"> *{e.get('message', '')}*")

    def _on_run_resumed(self, e: dict[str, Any]) -> None:
        self.code_cell = None
        self._markdown(
            f"*The run was interrupted and resumed: {e.get('replayed_cells', 0)} cells were run again to "
            f"rebuild the session; {e.get('message', '')}.*"
        )

    def _on_final_answer(self, e: dict[str, Any]) -> None:
        self._markdown(f"## Answer\n\n{e.get('answer', '')}\n\n{_totals(e)}")

    def _on_limit_reached(self, e: dict[str, Any]) -> None:
        self._markdown(
            f"## Stopped: {e.get('limit', 'limit')} limit\n\n{e.get('message', '')}\n\n{_totals(e)}"
        )

    def _on_run_error(self, e: dict[str, Any]) -> None:
        self._markdown(f"## Error ({e.get('code', 'error')})\n\n{e.get('message', '')}")


def _totals(e: dict[str, Any]) -> str:
    parts = []
    if e.get("steps") is not None:
        parts.append(f"{e['steps']} steps")
    if e.get("duration_s") is not None:
        parts.append(f"{float(e['duration_s']):.1f} s")
    if e.get("tokens") is not None:
        parts.append(f"{e['tokens']} tokens")
    return f"*{' · '.join(parts)}*" if parts else ""


def _mime_value(mime: str, value: Any) -> Any:
    """nbformat wants JSON mime types as objects and everything else as text."""
    if mime.endswith("json") and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value if isinstance(value, str | dict | list) else str(value)


CELL_MAGICS = {"js": "%%script node\n", "sh": "%%bash\n"}
"""A JavaScript or shell cell in the Python notebook: a cell magic that runs it with that interpreter
(each such cell on its own, where the session kept their variables; the metadata says the language)."""


def _cell_source(code: str, language: str) -> str:
    return CELL_MAGICS.get(language, "") + code
