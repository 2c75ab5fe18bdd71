"""A local ``thinkbox serve`` that ``thinkbox ask`` can use: its model is already loaded.

Loading the embedded model and evaluating the system prompt is most of a cold ``ask``'s time before the
first token. When ``thinkbox serve`` runs on the same machine with the same data dir, ``ask`` sends the
question to it instead (the same events, through :func:`thinkbox.cli.remote.remote_run`).

The discovery file ``DATA_DIR/serve.json`` says where: ``{"url", "key", "key_id", "pid"}``. ``serve``
writes it (mode 0600, written whole then renamed into place) with a key it makes for the local user
``local/local`` (the one ``thinkbox mcp`` over stdio acts as), and on exit removes it and revokes the key.
``ask`` uses it only when the file is the current user's and nobody else can read it, its process is
alive and the service answers ``/v1/me`` with that key; otherwise it loads the model itself. ``--no-serve``
and ``service.local_reuse = false`` turn this off.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from thinkbox.config import Settings

if TYPE_CHECKING:  # the database is the server's side; ``ask`` only reads the file (a light import)
    from thinkbox.service.db.engine import Database

DISCOVERY_FILE = "serve.json"
LOCAL_USER = ("local", "local")
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LocalServer:
    url: str
    key: str
    key_id: str
    pid: int


def discovery_path(settings: Settings) -> Path:
    return settings.data_dir / DISCOVERY_FILE


def reachable_url(settings: Settings) -> str | None:
    """The URL a local client reaches the service by; None when its port is chosen at start (port 0)."""
    svc = settings.service
    if svc.port == 0:
        return None
    host = "127.0.0.1" if svc.host in ("0.0.0.0", "", "localhost") else svc.host
    if host in ("::", "::1"):
        host = "[::1]"
    return f"http://{host}:{svc.port}"


def publish(settings: Settings, db: Database) -> LocalServer | None:
    """Write the discovery file with a new key of the local user; None when no URL is known in advance."""
    from thinkbox.service import accounts

    url = reachable_url(settings)
    if url is None:
        return None
    accounts.local_principal(db, *LOCAL_USER)  # the tenant and user, made when missing
    row, key = accounts.create_key(db, *LOCAL_USER)
    found = LocalServer(url=url, key=key, key_id=row.id, pid=os.getpid())
    path = discovery_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{DISCOVERY_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "key": key, "key_id": row.id, "pid": found.pid}, f)
    os.replace(partial, path)
    return found


def withdraw(settings: Settings, db: Database, published: LocalServer) -> None:
    """Remove the discovery file (when it is still this process's) and revoke its key."""
    from thinkbox.service import accounts

    path = discovery_path(settings)
    current = _read(path)
    if current is not None and current.pid == published.pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(Exception):  # the database may be gone already; the key dies with it then
        accounts.revoke_key(db, published.key_id)


def find(settings: Settings) -> LocalServer | None:
    """The local service to ask, or None (no file, not ours, process gone, or it does not answer)."""
    if not settings.service.local_reuse:
        return None
    found = _read(discovery_path(settings))
    if found is None or not _alive(found.pid):
        return None
    try:
        response = httpx.get(
            found.url + "/v1/me",
            headers={"Authorization": f"Bearer {found.key}"},
            timeout=CHECK_TIMEOUT_S,
            trust_env=False,
        )
    except httpx.HTTPError:
        return None
    return found if response.status_code == 200 else None


def _read(path: Path) -> LocalServer | None:
    """The file's content when it is a regular file of this user that no one else may read."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return LocalServer(url=str(data["url"]), key=str(data["key"]), key_id=str(data["key_id"]),
                           pid=int(data["pid"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
