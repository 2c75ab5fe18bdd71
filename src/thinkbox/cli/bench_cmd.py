"""``thinkbox bench ...``: benchmarks, one subcommand per family."""

from __future__ import annotations

import typer

bench_app = typer.Typer(
    help="Measure thinkbox: the sandbox engine, the model, reasoning.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("sandbox")
def bench_sandbox(
    quick: bool = typer.Option(False, "--quick", help="Fewer samples: finishes in under a minute."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    backends: str = typer.Option(
        "zygote,bwrap", "--backends", help="Comma-separated; the first is measured in full."
    ),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
) -> None:
    """Warm pool, fresh sessions, round trip, memory and a burst of 100, side by side against bwrap."""
    import asyncio
    import sys
    from pathlib import Path

    from rich.console import Console

    from thinkbox.bench.sandbox import render, run_sandbox_bench
    from thinkbox.errors import ThinkboxError

    names = [n.strip() for n in backends.split(",") if n.strip()]
    err = Console(stderr=True)
    try:
        report = asyncio.run(
            run_sandbox_bench(quick=quick, backends=names, progress=lambda m: err.print(f"[dim]{m}[/dim]"))
        )
    except ThinkboxError as exc:
        print(f"thinkbox bench sandbox: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    data = report.model_dump_json(indent=2)
    if out:
        Path(out).write_text(data + "\n", encoding="utf-8")
    if json_out:
        print(data)
    else:
        render(report, Console())
    primary = report.backends[report.primary]
    if not primary.available:
        print(f"thinkbox bench sandbox: {primary.name} cannot run here: {primary.reason}", file=sys.stderr)
        raise typer.Exit(2)


@bench_app.command("model")
def bench_model(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    runs: int = typer.Option(4, "--runs", min=0, help="Agent runs per reference question (0: speed only)."),
    name: str | None = typer.Option(None, "--name", help="Catalogue model (default: model.name)."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Sampling temperature of the question runs (default: model.temperature)."
    ),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
) -> None:
    """The local model: prompt and generation tokens/s, memory, turn-3 latency with and without KV-cache
    reuse, and the four reference questions through the agent loop."""
    import asyncio
    import sys
    from pathlib import Path

    from rich.console import Console

    from thinkbox.bench.model import render, run_model_bench
    from thinkbox.config import load_settings
    from thinkbox.errors import ThinkboxError

    err = Console(stderr=True)
    try:
        settings = load_settings(**({"model": {"name": name}} if name else {}))
        report = asyncio.run(
            run_model_bench(settings, runs=runs, temperature=temperature, progress=lambda m: err.log(m))
        )
    except ThinkboxError as exc:
        print(f"thinkbox bench model: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    data = report.model_dump_json(indent=2)
    if out:
        Path(out).write_text(data + "\n", encoding="utf-8")
    if json_out:
        print(data)
    else:
        render(report)
