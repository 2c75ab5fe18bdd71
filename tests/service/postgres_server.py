"""A PostgreSQL server of the test run's own: installed when missing (Debian's ``postgresql``), a fresh
cluster in a temporary directory, listening on a free loopback port, stopped at the end (only this
cluster, through its own data directory).

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system user of the
package (created when missing). Durability is switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``): a test cluster never outlives its run, and ``CREATE DATABASE`` per test stays fast.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERUSER = "thinkbox"
DATABASE = "thinkbox_test"
OS_USER = "postgres"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be installed or started here (the message says why)."""


@dataclass
class PostgresServer:
    port: int
    data_dir: Path
    start_seconds: float  # initdb + start, the install not counted
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    database: str = DATABASE

    def url(self, database: str | None = None) -> str:
        """The SQLAlchemy URL of ``database`` (default: the run's own database) on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database or self.database}"

    def execute(self, sql: str) -> None:
        """Run one statement in autocommit (CREATE / DROP DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def find_tool(name: str) -> str | None:
    """``name`` on PATH, else in the newest /usr/lib/postgresql/*/bin (Debian keeps them there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def _install() -> None:
    """Install Debian's ``postgresql`` when initdb is missing; PostgresUnavailable when that fails."""
    if find_tool("initdb") and find_tool("pg_ctl"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresUnavailable(
            "initdb not found and not root with apt-get to install it: run "
            "THINKBOX_WITH_POSTGRES=1 scripts/setup.sh, or install the postgresql package"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # the package lists may be missing on a fresh machine: fetch them once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if not (find_tool("initdb") and find_tool("pg_ctl")):
        raise PostgresUnavailable(f"apt-get install postgresql failed: {(proc.stdout + proc.stderr)[-500:]}")


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged user that runs the cluster when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
            capture_output=True,
            check=False,
        )
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresUnavailable(f"running as root and the {OS_USER!r} user cannot be created") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(argv: list[str], owner: pwd.struct_passwd | None, cwd: Path, **kwargs: Any) -> str:
    """Run a PostgreSQL tool as ``owner``; its output, or PostgresUnavailable with it."""
    as_user: dict[str, Any] = {}
    if owner is not None:
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, **as_user, **kwargs
    )
    if proc.returncode != 0:
        raise PostgresUnavailable(f"{Path(argv[0]).name} failed: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running cluster with the database ``thinkbox_test``, for as long as the ``with`` lasts."""
    _install()
    initdb, pg_ctl = find_tool("initdb"), find_tool("pg_ctl")
    assert initdb and pg_ctl
    owner = _os_user()
    tmp = Path(tempfile.mkdtemp(prefix="thinkbox-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    started = False
    try:
        if owner is not None:
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
        t0 = time.monotonic()
        cluster = ["-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([initdb, *cluster], owner, tmp)
        options = (
            f"-c listen_addresses=127.0.0.1 -k {tmp} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        for attempt in range(3):  # a free port can be taken by someone else before the server binds it
            port = _free_port()
            try:
                argv = [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S)]
                _run([*argv, "-o", f"-p {port} {options}", "start"], owner, tmp)
                started = True
                break
            except PostgresUnavailable:
                if attempt == 2:
                    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                    raise PostgresUnavailable(f"the server did not start: {tail}") from None
        server = PostgresServer(port=port, data_dir=data, start_seconds=0.0)
        server.execute(f'CREATE DATABASE "{DATABASE}"')
        server.start_seconds = time.monotonic() - t0
        yield server
    finally:
        if started:
            _stop(pg_ctl, data, owner, tmp)
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)


def _stop(pg_ctl: str, data: Path, owner: pwd.struct_passwd | None, tmp: Path) -> None:
    """Stop the cluster of ``data`` (fast: open connections are ended), and no other."""
    try:
        _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], owner, tmp)
    except PostgresUnavailable:
        _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], owner, tmp)
