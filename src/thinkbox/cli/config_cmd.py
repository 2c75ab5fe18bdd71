"""``thinkbox config show [--json]``: the effective settings, where each value came from, secrets masked."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from thinkbox.config import default_config_file, load_settings, masked_dump
from thinkbox.errors import ThinkboxError

EXIT_ERROR = 2

config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print every setting's effective value (flags > THINKBOX_* variables > config file > default)."""
    path = default_config_file()
    try:
        settings = load_settings()
    except ThinkboxError as exc:
        print(f"thinkbox: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    values = masked_dump(settings)
    file_values = _read_toml(path)
    rows = [(key, value, _source(key, file_values)) for key, value in _flatten(values)]
    if json_out:
        out = {
            "config_file": str(path),
            "config_file_exists": path.is_file(),
            "settings": values,
            "sources": {key: source for key, _, source in rows},
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    console = Console(highlight=False)
    state = "" if path.is_file() else " [dim](not found: defaults and environment only)[/]"
    console.print(f"config file: {path}{state}")
    table = Table(box=None, pad_edge=False)
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for key, value, source in rows:
        table.add_row(key, "" if value is None else json.dumps(value, ensure_ascii=False), source)
    console.print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _read_toml(path: Any) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _source(key: str, file_values: dict[str, Any]) -> str:
    """Where the value of dotted ``key`` came from: env, file or default."""
    parts = key.split(".")
    env_names = {f"THINKBOX_{'__'.join(parts[: i + 1])}".upper() for i in range(len(parts))}
    if any(name.upper() in env_names for name in os.environ):
        return "env"
    node: Any = file_values
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return "default"
        node = node[part]
    return "file"
