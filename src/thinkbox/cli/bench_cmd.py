"""``thinkbox bench ...``: benchmarks, one subcommand per family."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

R = TypeVar("R")
bench_app = typer.Typer(
    help="Measure thinkbox: the sandbox engine, the model, reasoning, the service.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


def _emit(report: BaseModel, json_out: bool, out: str | None, render: Callable[[], None]) -> None:
    """The figures: as JSON (``--json``) or a table, and into ``--out`` when given."""
    data = report.model_dump_json(indent=2)
    if out:
        Path(out).write_text(data + "\n", encoding="utf-8")
    if json_out:
        print(data)
    else:
        render()


def _measure(name: str, run: Callable[[Callable[[str], None]], Coroutine[Any, Any, R]]) -> R:
    """Run one benchmark, its progress dimmed on stderr; a ThinkboxError (machinery, not a missed target)
    ends the command with exit status 2 and the message."""
    import asyncio
    import sys

    from rich.console import Console

    from thinkbox.errors import ThinkboxError

    err = Console(stderr=True)
    try:
        return asyncio.run(run(lambda m: err.print(f"[dim]{m}[/dim]")))
    except ThinkboxError as exc:
        print(f"thinkbox bench {name}: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


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
    _emit(report, json_out, out, lambda: render(report, Console()))
    primary = report.backends[report.primary]
    if not primary.available:
        print(f"thinkbox bench sandbox: {primary.name} cannot run here: {primary.reason}", file=sys.stderr)
        raise typer.Exit(2)


@bench_app.command("service")
def bench_service(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    runs: int = typer.Option(200, "--runs", min=1, help="Runs submitted at once."),
    users: int = typer.Option(20, "--users", min=1, help="Users submitting them (runs go round-robin)."),
    tenants: int = typer.Option(4, "--tenants", min=1, help="Tenants the users belong to."),
    steps: int = typer.Option(3, "--steps", min=1, help="Code steps of every run before its answer."),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
) -> None:
    """A thinkbox serve of its own with the scripted model: runs at once over SSE (latency, lost or duplicated
    events), the service's added latency per step against run_agent in-process, and a kill -9 with restart
    (every interrupted run must finish). Exit status 1 when events were lost or duplicated, a run stuck, an
    interrupted run did not finish or something failed (a missed speed target is reported, not an error);
    2 when it cannot run."""
    import sys

    from rich.console import Console

    from thinkbox.bench.service import CORRECTNESS, render, run_service_bench

    report = _measure("service", lambda progress: run_service_bench(
        runs=runs, users=users, tenants=tenants, steps=steps, progress=progress))  # fmt: skip
    _emit(report, json_out, out, lambda: render(report, Console()))
    missed = [name for name, ok in report.targets.items() if not ok]
    if missed:
        print(f"thinkbox bench service: targets missed: {', '.join(missed)}", file=sys.stderr)
    if report.errors or not all(report.targets[name] for name in CORRECTNESS):
        raise typer.Exit(1)


@bench_app.command("mcp")
def bench_mcp(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    samples: int = typer.Option(400, "--samples", min=25, help="run_code calls on each side."),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
) -> None:
    """What `thinkbox mcp` (stdio) adds to running code: run_code through the mcp SDK's client against
    Session.execute, interleaved in one run. Exit status 1 when the 3 ms target is missed."""
    from rich.console import Console

    from thinkbox.bench.mcp import render, run_mcp_bench

    report = _measure("mcp", lambda progress: run_mcp_bench(samples, progress=progress))
    _emit(report, json_out, out, lambda: render(report, Console()))
    if not report.target_added_le_3ms:
        raise typer.Exit(1)


@bench_app.command("egress")
def bench_egress(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    samples: int = typer.Option(400, "--samples", min=25, help="Requests on each side."),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
    pip_rounds: int = typer.Option(
        0, "--pip", min=0, help="Also time pip installs of two users of a tenant, this many rounds (0: no)."
    ),
) -> None:
    """What the egress proxy adds to a request: through a session's proxy against directly, to the same
    local HTTP server, interleaved in one run; and the same request from code in a session. With --pip N:
    pip installs of a tenant's first and second user (the tenant's package cache), N rounds. Exit status 1
    when the 5 ms target (proxy_added_ms_p50) is missed."""
    from rich.console import Console

    from thinkbox.bench.egress import render, run_egress_bench

    report = _measure("egress", lambda progress: run_egress_bench(samples, pip_rounds, progress=progress))
    _emit(report, json_out, out, lambda: render(report, Console()))
    if not report.target_added_le_5ms:
        raise typer.Exit(1)


@bench_app.command("model")
def bench_model(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    runs: int = typer.Option(4, "--runs", min=0, help="Agent runs per reference question (0: speed only)."),
    name: str | None = typer.Option(None, "--name", help="Catalogue model (default: model.name)."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Sampling temperature of the question runs (default: model.temperature)."
    ),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
    cold: bool = typer.Option(
        True, "--cold/--no-cold", help="Also time thinkbox ask in new processes against the loaded model."
    ),
) -> None:
    """The local model: prompt and generation tokens/s, memory, turn-3 latency with and without KV-cache
    reuse, cold and warm time to the first token and to the answer, and the four reference questions
    through the agent loop."""
    import asyncio
    import sys

    from rich.console import Console

    from thinkbox.bench.model import render, run_model_bench
    from thinkbox.config import load_settings
    from thinkbox.errors import ThinkboxError

    err = Console(stderr=True)
    try:
        settings = load_settings(**({"model": {"name": name}} if name else {}))
        report = asyncio.run(
            run_model_bench(
                settings, runs=runs, cold=cold, temperature=temperature, progress=lambda m: err.log(m)
            )
        )
    except ThinkboxError as exc:
        print(f"thinkbox bench model: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    _emit(report, json_out, out, lambda: render(report))


@bench_app.command("reasoning")
def bench_reasoning(
    model: str | None = typer.Option(None, "--model", help="Model name (default: model.name)."),
    families: str | None = typer.Option(
        None, "--families", help="Comma-separated: thinkbox's own families or any reasoning-gym dataset."
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="Items per family (default 20; --quick: 3)."),
    split: str = typer.Option(
        "dev",
        "--split",
        help="dev: seed 0, the items prompts are tuned on; test: seed 7331, held out (report these).",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Overrides the split's seed."),
    difficulty: int = typer.Option(2, "--difficulty", min=1, max=3, help="1 easy, 2 medium, 3 hard."),
    arms: str = typer.Option(
        "direct,code,router",
        "--arms",
        help="Comma-separated: direct, cot, code, code:py, code:js, code:both, router; router:DESIGN runs "
        "another router design side by side.",
    ),
    router: str | None = typer.Option(
        None,
        "--router",
        help="Router design: auto (the default): the product's own routing (thinkbox ask --route auto), run "
        "for real on every item: a program goes direct, a value to the loop, whose first action decides, "
        "with a direct answer when the code route stops at a limit.",
    ),
    jobs: int = typer.Option(4, "--jobs", min=1, help="Items at once for a remote endpoint (local: 1)."),
    out: str | None = typer.Option(
        None,
        "--out",
        help="Results cache, report.md, report.json, chart.png (default: data_dir/bench/reasoning).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    quick: bool = typer.Option(False, "--quick", help="3 items of 4 families: a check in minutes."),
    from_cache: bool = typer.Option(
        False,
        "--from-cache",
        help="Ask nothing: report the results already under --out of this split (this checkout's agent "
        "version, else the one with most results), each family with the items it has (--families: only "
        "these). For a run made in parts.",
    ),
) -> None:
    """Thinking in code against direct answers, per task family, and a router that picks per question.
    Results are cached per item under --out: run the same command again to resume."""
    import asyncio
    import shlex
    import sys
    from pathlib import Path

    from rich.console import Console

    from thinkbox.bench.reasoning.report import report_from_cache
    from thinkbox.bench.reasoning.runner import (
        DEFAULT_FAMILIES,
        QUICK_FAMILIES,
        QUICK_N,
        BenchConfig,
        run_reasoning_bench,
        summary_json,
        write_outputs,
    )
    from thinkbox.config import load_settings
    from thinkbox.errors import ThinkboxError

    err = Console(stderr=True)
    chosen = families.split(",") if families else list(QUICK_FAMILIES if quick else DEFAULT_FAMILIES)
    if split not in ("dev", "test"):
        print(f"thinkbox bench reasoning: unknown split {split!r}; fix --split: dev or test", file=sys.stderr)
        raise typer.Exit(2)
    try:
        settings = load_settings(**({"model": {"name": model}} if model else {}))
        config = BenchConfig(
            families=[f.strip() for f in chosen if f.strip()], n=n or (QUICK_N if quick else 20), split=split,
            seed=seed, difficulty=difficulty, arms=[a.strip() for a in arms.split(",") if a.strip()],
            **({"router": router} if router else {}),
            jobs=jobs, out=Path(out) if out else settings.data_dir / "bench" / "reasoning",
        )  # fmt: skip
        command = shlex.join(["thinkbox", "bench", "reasoning", *sys.argv[3:]])
        if from_cache:
            report = report_from_cache(
                config.out, split=split, seed=config.item_seed, difficulty=difficulty, settings=settings,
                families=config.families if families else None, command=command,
            )  # fmt: skip
            write_outputs(report, config.out)
        else:
            report = asyncio.run(
                run_reasoning_bench(config, settings, progress=lambda m: err.log(m), command=command)
            )
    except ValueError as exc:
        print(f"thinkbox bench reasoning --from-cache: {exc}; fix --out or --split", file=sys.stderr)
        raise typer.Exit(2) from None
    except ThinkboxError as exc:
        print(
            f"thinkbox bench reasoning: {exc} (cached results are kept: run again to resume)", file=sys.stderr
        )
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        print(
            "thinkbox bench reasoning: interrupted; cached results are kept: run again to resume",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    if json_out:
        print(summary_json(report))
    else:
        print((config.out / "report.md").read_text(encoding="utf-8"))
        print(f"(report, chart and per-item results in {config.out})")


@bench_app.command("tools")
def bench_tools(
    json_out: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    out: str | None = typer.Option(None, "--out", help="Also write the JSON figures to this file."),
) -> None:
    """Three questions asked twice by one user of a fresh `thinkbox serve` with the settings' model: the
    first round writes and saves a tool per question, the second may reuse it. Steps, tokens and seconds
    of both rounds; exit status 1 when the second round is not cheaper."""

    from rich.console import Console

    from thinkbox.bench.tools import render, run_tools_bench

    report = _measure("tools", lambda progress: run_tools_bench(progress=progress))
    _emit(report, json_out, out, lambda: render(report, Console()))
    if report.errors:
        raise typer.Exit(2)
    if not report.target_second_cheaper:
        raise typer.Exit(1)
