"""``thinkbox secrets set|list|rm`` (a client of a thinkbox service, like ``thinkbox tools``) and the
operator's ``thinkbox admin secrets rotate-key`` and ``thinkbox admin user admin TENANT USER [--off]``.

``secrets set NAME`` reads the value from stdin (without echo on a terminal) so that it never sits in the
shell's history or the process list. The admin commands open the service's database like the other
``thinkbox admin`` commands.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from thinkbox.cli import admin_cmd
from thinkbox.cli.tools_cmd import JsonOpt, KeyOpt, ServerOpt, _call, _fail, _name

secrets_app = typer.Typer(
    help="Credentials your sessions use without seeing them, on a thinkbox service.", no_args_is_help=True
)
admin_secrets_app = typer.Typer(help="The encryption key of the service's stored secrets.")
TenantOpt = Annotated[
    bool, typer.Option("--tenant", help="Tenant-wide (every user of your tenant; tenant admins only).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
    admin_cmd.admin_app.add_typer(admin_secrets_app, name="secrets", no_args_is_help=True)
    admin_cmd.user_app.command("admin")(user_admin)


def _secret_path(name: str) -> str:
    return f"/v1/secrets/{_name('secret name', name, 'GITHUB_TOKEN')}"


def _read_value() -> str:
    if sys.stdin.isatty():
        value = getpass.getpass("value (not echoed): ")
    else:
        try:
            value = sys.stdin.read()
            value.encode("utf-8")  # undecodable bytes arrive as surrogates under surrogateescape
        except (UnicodeDecodeError, UnicodeEncodeError):
            _fail("the value on stdin is not UTF-8 text: pipe in the credential itself, as text")
        value = value[:-1] if value.endswith("\n") else value  # `echo VALUE |` adds one
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        _fail('no value on stdin: pipe it in (e.g. `printf %s "$TOKEN" | thinkbox secrets set NAME ...`)')
    return value


@secrets_app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(help="The secret's name: the environment variable sessions get.")],
    server: ServerOpt,
    api_key: KeyOpt,
    host: Annotated[
        list[str],
        typer.Option(
            "--host",
            help=(
                "A host (or host:port, *.domain) it may be sent to (repeat); over plain http to a public "
                "address only host:PORT (e.g. host:80) lets it go."
            ),
        ),
    ],
    header: Annotated[
        str | None, typer.Option("--header", help="How it is sent, e.g. 'Authorization: Bearer {secret}'.")
    ] = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="A path prefix it may go to (repeat).")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="An HTTP method it may use (repeat).")
    ] = None,
    tenant: TenantOpt = False,
) -> None:
    """Store a secret (or replace it), reading its value from stdin."""
    body: dict[str, Any] = {
        "value": _read_value(),
        "hosts": host,
        "header": header,
        "paths": path or [],
        "methods": method or [],
        "scope": "tenant" if tenant else "user",
    }
    info = _call(server, api_key, "PUT", _secret_path(name), body)
    typer.echo(
        f"stored {info['name']} ({info['scope']}): sent only to {', '.join(info['hosts'])}; "
        f"sessions see a placeholder in ${info['name']}"
    )


@secrets_app.command("list")
def list_command(server: ServerOpt, api_key: KeyOpt, json_out: JsonOpt = False) -> None:
    """Your secrets and your tenant's: names, rules, last use (never values)."""
    data = _call(server, api_key, "GET", "/v1/secrets")
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    if not data["secrets"]:
        typer.echo("no secrets yet: thinkbox secrets set NAME --host HOST < value.txt")
        return
    table = Table("name", "scope", "hosts", "header", "paths", "methods", "last used")
    for info in data["secrets"]:
        scope = info["scope"] + ("" if info["active"] else " (hidden by yours)")
        table.add_row(
            info["name"],
            scope,
            "\n".join(info["hosts"]),
            info["header"] or "",
            "\n".join(info["paths"]),
            " ".join(info["methods"]),
            admin_cmd._when(info["last_used_at"]) or "never",
        )
    Console().print(table)


@secrets_app.command("rm")
def rm_command(name: str, server: ServerOpt, api_key: KeyOpt, tenant: TenantOpt = False) -> None:
    """Delete a secret."""
    scope = "tenant" if tenant else "user"
    _call(server, api_key, "DELETE", f"{_secret_path(name)}?scope={scope}")
    typer.echo(f"deleted {name} ({scope})")


@admin_secrets_app.command("rotate-key")
def rotate_key(data_dir: admin_cmd.DataDirOpt = None, database_url: admin_cmd.DatabaseOpt = None) -> None:
    """Put a new encryption key first (in DATA_DIR/secrets.key) and re-encrypt every stored secret with it.

    With THINKBOX_SECRETS_KEY set, put the new key first in it yourself: this re-encrypts with that one."""
    from thinkbox.service.secrets.keys import Keyring
    from thinkbox.service.secrets.store import SecretStore

    with admin_cmd._open(data_dir, database_url) as target:
        where, count = SecretStore(target.db, Keyring(target.data_dir)).rotate_key()
    print(f"re-encrypted {count} secrets with the new key in {where}")


def user_admin(
    tenant: admin_cmd.TenantArg,
    user: admin_cmd.UserArg,
    off: Annotated[bool, typer.Option("--off", help="Take the right away.")] = False,
    data_dir: admin_cmd.DataDirOpt = None,
    database_url: admin_cmd.DatabaseOpt = None,
) -> None:
    """Make a user a tenant admin (may set the tenant's tenant-wide secrets), or not (--off)."""
    from sqlalchemy import update

    from thinkbox.service import accounts
    from thinkbox.service.db.models import User

    with admin_cmd._open(data_dir, database_url) as target:
        row = accounts.get_user(target.db, tenant, user)
        with target.db.session() as s:
            s.execute(update(User).where(User.id == row.id).values(tenant_admin=not off))
            s.commit()
    print(f"{user} of {tenant} is {'no longer ' if off else ''}a tenant admin")
