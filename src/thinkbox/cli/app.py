"""Root of the ``thinkbox`` CLI. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="thinkbox",
    help="An AI agent that thinks in code, in an isolated, persistent Python sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# module -> how it attaches: each module exposes ``register(app)``.
_COMMAND_MODULES = (
    "thinkbox.cli.agent_cmd",  # ask, chat
    "thinkbox.cli.exec_cmd",  # exec
    "thinkbox.cli.bench_cmd",  # bench sandbox | model | reasoning
    "thinkbox.cli.runs_cmd",  # runs list | show | export
    "thinkbox.cli.config_cmd",  # config show
    "thinkbox.cli.model_cmd",  # model status | path | install
    "thinkbox.cli.image_cmd",  # image build
    "thinkbox.cli.serve_cmd",  # serve
    "thinkbox.cli.mcp_cmd",  # mcp
    "thinkbox.cli.admin_cmd",  # admin tenant|user|key
    "thinkbox.cli.tools_cmd",  # tools list|show|save|test|rm|versions|rollback
    "thinkbox.cli.secrets_cmd",  # secrets set|list|rm, admin secrets rotate-key, admin user admin
)

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a command group not written yet
        if _exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    app()
