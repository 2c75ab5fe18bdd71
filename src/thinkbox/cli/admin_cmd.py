"""``thinkbox admin tenant | user | key ...``: the accounts of the service (``thinkbox serve``).

Every command opens the service's database (``--database-url``, else ``service.database_url``, else SQLite
at ``DATA_DIR/thinkbox.db``) and migrates it when needed, so it works before the server ever ran and
beside a running server. Exit status 2 when something must be fixed (the message says what).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from thinkbox.config import load_settings
from thinkbox.errors import ConfigError, ThinkboxError

if TYPE_CHECKING:  # the service's modules (SQLAlchemy, Alembic) are imported when a command runs
    from thinkbox.service.db import Database

EXIT_ERROR = 2

admin_app = typer.Typer(
    help="Tenants, users, API keys and network policy of the service.", no_args_is_help=True
)
tenant_app = typer.Typer(help="Tenants: teams or customers, each with its own users and storage.")
user_app = typer.Typer(help="Users of a tenant, each with a folder of their own.")
key_app = typer.Typer(help="API keys: a user's bearer tokens for the service's API.")
admin_app.add_typer(tenant_app, name="tenant", no_args_is_help=True)
admin_app.add_typer(user_app, name="user", no_args_is_help=True)
admin_app.add_typer(key_app, name="key", no_args_is_help=True)
network_app = typer.Typer(help="Network policy: the hosts a tenant's sessions may reach (default deny).")
admin_app.add_typer(network_app, name="network", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the service keeps everything (default: THINKBOX_DATA_DIR)."),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The service's database (default: service.database_url, else SQLite in the data dir).",
    ),
]
TenantArg = Annotated[str, typer.Argument(help="The tenant's name.")]
UserArg = Annotated[str, typer.Argument(help="The user's name.")]


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


class _Target:
    """The data dir and the open database of one command."""

    def __init__(self, data_dir: Path, db: Database) -> None:
        self.data_dir = data_dir
        self.db = db


@contextmanager
def _open(data_dir: Path | None, database_url: str | None) -> Iterator[_Target]:
    """Open the database; a ThinkboxError raised inside becomes a one-line message and exit status 2."""
    from thinkbox.service.db import Database
    from thinkbox.service.db import database_url as default_url

    db = None
    try:
        overrides: dict[str, object] = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if database_url is not None:
            overrides["service"] = {"database_url": database_url}
        settings = load_settings(**overrides)
        db = Database.open(default_url(settings))
        yield _Target(settings.data_dir, db)
    except ThinkboxError as exc:
        print(f"thinkbox: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        if db is not None:
            db.dispose()


def _storage(data_dir: Path, *parts: str) -> Path:
    """Create (if missing) the storage folder DATA_DIR/storage/<parts...>."""
    folder = data_dir.joinpath("storage", *parts)
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the storage folder {folder} ({exc.strerror}): fix the permissions of "
            f"{data_dir} or choose another --data-dir"
        ) from None
    return folder


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> None:
    """Print a table whose ids and names are never cut (times wrap first in a narrow terminal)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 1000  # piped: whole lines, for grep and scripts
    if not rows:
        console.print(empty)
        return
    table = Table(box=None, pad_edge=False)
    for column in columns:
        timely = column in ("created", "last used", "revoked")
        table.add_column(column, no_wrap=not timely, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _user_folder(data_dir: Path, tenant: str, user: str) -> Path:
    """The user's folder, made as the service makes it (owned so that no other user's session can enter it,
    even one that started before: :mod:`thinkbox.service.storage.layout`)."""
    from thinkbox.service.storage.layout import Layout

    try:
        return Layout(data_dir / "storage").ensure(tenant, user)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder of {user} in {data_dir / 'storage' / tenant} ({exc.strerror}): fix "
            f"the permissions of {data_dir} or choose another --data-dir"
        ) from None


# -- tenants -------------------------------------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(name: TenantArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None) -> None:
    """Create a tenant and its shared folder DATA_DIR/storage/<tenant>/."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        accounts.check_name("tenant", name)
        folder = _storage(target.data_dir, name)
        tenant = accounts.create_tenant(target.db, name)
        print(f"created tenant {tenant.name} ({tenant.id}), shared folder {folder}")


@tenant_app.command("list")
def tenant_list(data_dir: DataDirOpt = None, database_url: DatabaseOpt = None) -> None:
    """The tenants with their number of users."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        tenants = accounts.list_tenants(target.db)
        users = accounts.list_users(target.db)
    count = Counter(tenant.id for tenant, _ in users)
    rows = [(t.name, t.id, str(count[t.id]), _when(t.created_at)) for t in tenants]
    _table(("tenant", "id", "users", "created"), rows, "no tenants yet: thinkbox admin tenant create NAME")


# -- users ---------------------------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    tenant: TenantArg, user: UserArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Create a user of a tenant and their folder DATA_DIR/storage/<tenant>/<user>/."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        accounts.check_name("user", user)
        accounts.get_tenant(target.db, tenant)
        folder = _user_folder(target.data_dir, tenant, user)
        row = accounts.create_user(target.db, tenant, user)
        print(f"created user {row.name} ({row.id}) of tenant {tenant}, folder {folder}")


@user_app.command("list")
def user_list(
    tenant: Annotated[str | None, typer.Argument(help="Only this tenant's users.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """The users (of one tenant, or of all)."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        users = accounts.list_users(target.db, tenant)
    rows = [(t.name, u.name, u.id, _when(u.created_at)) for t, u in users]
    _table(("tenant", "user", "id", "created"), rows, "no users yet: thinkbox admin user create TENANT USER")


# -- keys ----------------------------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    tenant: TenantArg, user: UserArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Create an API key for a user. The key is printed once, alone on the last line: store it now."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        row, key = accounts.create_key(target.db, tenant, user)
    print(f"key {row.id} for {user} of {tenant} (shown once, store it now):")
    print(key)


@key_app.command("revoke")
def key_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or prefix, as `thinkbox admin key list` shows.")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key: requests with it are refused (by a running server within a few seconds)."""
    from thinkbox.service import accounts

    started = time.time()
    with _open(data_dir, database_url) as target:
        row = accounts.revoke_key(target.db, key)
    if row.revoked_at is not None and row.revoked_at < started:
        print(f"key {row.id} ({row.prefix}…) was already revoked on {_when(row.revoked_at)}")
    else:
        print(f"revoked key {row.id} ({row.prefix}…)")


@key_app.command("list")
def key_list(
    tenant: Annotated[str | None, typer.Argument(help="Only this tenant's keys.")] = None,
    user: Annotated[str | None, typer.Argument(help="Only this user's keys.")] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """The keys (by prefix, never whole), with their user, last use and revocation."""
    from thinkbox.service import accounts

    with _open(data_dir, database_url) as target:
        keys = accounts.list_keys(target.db, tenant, user)
    rows = [
        (k.id, k.prefix, t.name, u.name, _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at))
        for t, u, k in keys
    ]
    columns = ("id", "prefix", "tenant", "user", "created", "last used", "revoked")
    _table(columns, rows, "no keys yet: thinkbox admin key create TENANT USER")


# -- network -------------------------------------------------------------------------------------------------
HostArg = Annotated[
    str, typer.Argument(help="HOST or HOST:PORT; *.example.com for its sub-domains; no port: any port.")
]


def _network_set(
    tenant: str, host: str, action: str, data_dir: Path | None, database_url: str | None
) -> None:
    from thinkbox.service.egress import rules

    with _open(data_dir, database_url) as target:
        row, before = rules.set_rule(target.db, tenant, host, action)
    was = f" (was {before})" if before and before != action else ""
    print(f"{action} {row.pattern} for tenant {tenant}{was}; running servers apply it within seconds")


@network_app.command("allow")
def network_allow(
    tenant: TenantArg, host: HostArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Let the tenant's sessions reach HOST[:PORT] (a private address only when named exactly)."""
    _network_set(tenant, host, "allow", data_dir, database_url)


@network_app.command("deny")
def network_deny(
    tenant: TenantArg, host: HostArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None
) -> None:
    """Refuse HOST[:PORT] to the tenant's sessions, even the package index (a deny wins over an allow)."""
    _network_set(tenant, host, "deny", data_dir, database_url)


@network_app.command("list")
def network_list(tenant: TenantArg, data_dir: DataDirOpt = None, database_url: DatabaseOpt = None) -> None:
    """The tenant's rules, and the package index that sessions may reach by default."""
    from thinkbox.service.egress import policy, rules

    with _open(data_dir, database_url) as target:
        rows = rules.list_rules(target.db, tenant)
        index = [str(p) for p in policy.index_patterns(policy.index_urls(load_settings().egress.index_url))]
    table = [(r.pattern, r.action, _when(r.created_at)) for r in rows]
    table += [(host, "allow (package index, default)", "") for host in index]
    _table(("host", "rule", "created"), table, f"no rules: {tenant}'s sessions reach no host")
