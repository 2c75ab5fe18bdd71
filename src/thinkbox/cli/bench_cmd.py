"""``thinkbox bench ...``: benchmarks, one subcommand per family."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Measure thinkbox: the sandbox engine, the model, reasoning.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
