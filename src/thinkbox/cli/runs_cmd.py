"""``thinkbox runs list | show ID | export ID --format ipynb``: the stored transcripts of past runs.

An ID may be any unique prefix of a run's id. Exit status 2 when the run is not found or the settings are
wrong (the message says what to fix).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from thinkbox.agent.events import parse_event
from thinkbox.cli.render import Renderer
from thinkbox.config import load_settings
from thinkbox.errors import ConfigError, ThinkboxError
from thinkbox.notebook import export_notebook
from thinkbox.transcripts import RunSummary, find_run, list_runs, summarize

EXIT_ERROR = 2
FORMATS = ("ipynb",)

runs_app = typer.Typer(
    help="Stored runs: list them, show one, export one as a notebook.", no_args_is_help=True
)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where runs are stored (default: THINKBOX_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")]
IdArg = Annotated[
    str, typer.Argument(help="The run's id, or a unique prefix of it (see `thinkbox runs list`).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def _data_dir(flag: Path | None) -> Path:
    return flag if flag is not None else load_settings().data_dir


def _fail(exc: ThinkboxError) -> typer.Exit:
    print(f"thinkbox: {exc.message}", file=sys.stderr)
    return typer.Exit(EXIT_ERROR)


@runs_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many runs.")] = 20,
    json_out: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """The stored runs, newest first: id, time, status, steps, question and answer."""
    try:
        runs = list_runs(_data_dir(data_dir))[:limit]
    except ThinkboxError as exc:
        raise _fail(exc) from None
    if json_out:
        for run in runs:
            print(json.dumps(run.as_dict(), ensure_ascii=False))
        return
    console = Console(highlight=False)
    if not runs:
        console.print('no runs stored yet; `thinkbox ask "..."` makes one')
        return
    console.print(_table(runs))


_STATUS_STYLE = {"answered": "green", "limit": "yellow", "error": "red", "incomplete": "dim"}


def _table(runs: list[RunSummary]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("id", "started", "status", "steps", "question", "answer"):
        table.add_column(column, no_wrap=column in ("id", "started"), overflow="ellipsis")
    for run in runs:
        started = datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            run.run_id,
            started,
            f"[{_STATUS_STYLE[run.status]}]{run.status}[/]",
            str(run.steps),
            _short(run.question, 60),
            _short(run.answer or "", 40),
        )
    return table


def _short(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@runs_app.command("show")
def show_command(run_id: IdArg, json_out: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Replay a stored run as it was shown live (or its raw events with --json)."""
    try:
        path = find_run(_data_dir(data_dir), run_id)
    except ThinkboxError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        return
    console = Console(highlight=False)
    render = Renderer(console)
    skipped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            render(parse_event(line))
        except ValidationError:  # a torn or damaged line, or an event this version does not know
            skipped += 1
    summary = summarize(path)
    console.print(f"[dim]run {summary.run_id} · {summary.status} · {path}[/]")
    if skipped:
        console.print(f"[dim]{skipped} line(s) could not be read and were skipped[/]")


@runs_app.command("export")
def export_command(
    run_id: IdArg,
    format: Annotated[str, typer.Option("--format", "-f", help="Export format: ipynb.")] = "ipynb",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: ./<run_id>.ipynb).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a stored run as a Jupyter notebook: thoughts, code with its outputs and figures, the answer."""
    try:
        if format not in FORMATS:
            raise ConfigError(f"unknown export format {format!r}; use --format {' | '.join(FORMATS)}")
        path = find_run(_data_dir(data_dir), run_id)
        out = output if output is not None else Path.cwd() / f"{path.stem}.{format}"
        try:
            export_notebook(path, out)
        except OSError as exc:
            raise ConfigError(f"cannot write {out} ({exc.strerror}); choose another file with -o") from None
    except ThinkboxError as exc:
        raise _fail(exc) from None
    print(out)
