"""The service's database on SQLite and on a real PostgreSQL server: migrations, the checks made when it is
opened, the constraints the service relies on, and use from several threads."""

from __future__ import annotations

import json
import os
import pwd
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from thinkbox.config import Settings
from thinkbox.errors import ConfigError
from thinkbox.service.db import (
    Base,
    Database,
    Run,
    RunEvent,
    Tenant,
    User,
    database_url,
    head_revision,
)
from thinkbox.service.db import engine as engine_module

TABLES = {
    "tenants",
    "users",
    "api_keys",
    "sessions",
    "runs",
    "run_events",
    "tools",
    "tool_versions",
    "secrets",
    "network_rules",
}


def _run_row(db: Database) -> Run:
    with db.session() as s:
        tenant = Tenant(name="acme")
        s.add(tenant)
        s.flush()
        user = User(tenant_id=tenant.id, name="alice")
        s.add(user)
        s.flush()
        run = Run(user_id=user.id, tenant_id=tenant.id, question="2+2?", status="queued")
        s.add(run)
        s.commit()
        return run


def test_migrations_create_the_schema_at_the_head_revision(database: Database) -> None:
    assert head_revision() == "0004"
    assert database.revision() == head_revision()
    assert set(inspect(database.engine).get_table_names()) == TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_second_open_changes_nothing_and_keeps_the_data(db_url: str) -> None:
    first = Database.open(db_url)
    run = _run_row(first)
    first.dispose()
    second = Database.open(db_url)
    try:
        assert second.revision() == head_revision()
        with second.session() as s:
            assert s.get(Run, run.id) is not None
            assert s.scalar(select(func.count()).select_from(Run)) == 1
    finally:
        second.dispose()


def test_two_processes_opening_a_new_database_at_once_both_succeed(db_url: str) -> None:
    code = (
        "import sys; from thinkbox.service.db import Database; print(Database.open(sys.argv[1]).revision())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode()[-800:] for _, err in outs]
    assert {out.decode().strip() for out, _ in outs} == {head_revision()}


def test_run_events_refuse_a_second_event_with_the_same_seq(database: Database) -> None:
    run = _run_row(database)
    with database.session() as s:
        s.add(RunEvent(run_id=run.id, seq=1, type="run_started", data="{}"))
        s.commit()
    with database.session() as s:
        s.add(RunEvent(run_id=run.id, seq=1, type="step_started", data="{}"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_foreign_keys_are_enforced(database: Database) -> None:
    with database.session() as s:
        s.add(User(tenant_id="t_missing", name="ghost"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_defaults_of_a_new_run(database: Database) -> None:
    run = _run_row(database)
    with database.session() as s:
        row = s.get(Run, run.id)
        assert row is not None
        assert (row.files, row.steps, row.tokens, row.last_seq, row.cancel_requested) == (
            "[]",
            0,
            0,
            0,
            False,
        )
        assert row.id.startswith("r_") and len(row.id) == 18
        assert isinstance(row.created_at, float)


def test_threads_write_events_at_once_without_losing_one(database: Database) -> None:
    run = _run_row(database)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(25):
                with database.session() as s:
                    s.add(RunEvent(run_id=run.id, seq=worker * 1000 + i, type="x", data=json.dumps(i)))
                    s.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(RunEvent)) == 200


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path}/thinkbox.db")
    try:
        with db.engine.connect() as conn:
            pragmas = {
                p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "busy_timeout")
            }
            pragmas |= {
                p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("foreign_keys", "synchronous")
            }
        assert pragmas == {"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1, "synchronous": 1}
        assert db.dialect == "sqlite"
    finally:
        db.dispose()


def test_default_url_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert database_url(settings) == f"sqlite:///{tmp_path}/thinkbox.db"
    url = "postgresql+psycopg://u@h/db"
    assert database_url(Settings(data_dir=tmp_path, service={"database_url": url})) == url


def test_open_without_migrate_leaves_a_new_database_empty(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path}/thinkbox.db", migrate=False)
    try:
        assert db.revision() is None
        assert inspect(db.engine).get_table_names() == []
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "not a database URL"),
        ("sqlite://", "give SQLite a file"),
        ("mysql://u@h/db", "only SQLite"),
    ],
)
def test_unusable_urls_are_refused_saying_why(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Database.open(url)


def test_unreachable_postgres_names_the_url_with_its_password_masked() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConfigError) as info:
        Database.open(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/thinkbox")
    message = str(info.value)
    assert f"postgresql+psycopg://app:***@127.0.0.1:{port}/thinkbox" in message
    assert "s3cret-pw" not in message
    assert "cannot connect" in message


# -- a data dir the service may not write to: refused at open, as an unprivileged user (root writes anyway) --

# The interpreter may live where ``nobody`` cannot read it (pyenv under /root): the child starts as root,
# opens a throwaway database so that everything the open needs is imported, then becomes ``nobody``.
_OPEN_AS = """
import os, sys, tempfile
from thinkbox.errors import ConfigError
from thinkbox.service.db import Database
with tempfile.TemporaryDirectory() as warm:
    Database.open(f"sqlite:///{warm}/warm.db").dispose()
uid, gid, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
try:
    Database.open(url).dispose()
except ConfigError as exc:
    print(exc)
    sys.exit(2)
print("opened")
"""


@pytest.fixture
def nobody_dir() -> Iterator[tuple[Path, pwd.struct_passwd]]:
    """A folder owned by ``nobody`` that ``nobody`` can reach (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="thinkbox-ro-"))
    base.chmod(0o755)
    folder = base / "data"
    folder.mkdir()
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    try:
        yield folder, nobody
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _open_as(user: pwd.struct_passwd, url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", _OPEN_AS, str(user.pw_uid), str(user.pw_gid), url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_a_read_only_data_dir_is_refused_saying_it_is_not_writable(
    nobody_dir: tuple[Path, pwd.struct_passwd],
) -> None:
    folder, nobody = nobody_dir
    assert _open_as(nobody, f"sqlite:///{folder}/ok.db").stdout.strip() == "opened"  # the set-up works
    folder.chmod(0o500)
    proc = _open_as(nobody, f"sqlite:///{folder}/thinkbox.db")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the database {folder}/thinkbox.db is not writable" in proc.stdout
    assert "--data-dir" in proc.stdout


def test_a_read_only_database_file_is_refused_before_any_change(
    nobody_dir: tuple[Path, pwd.struct_passwd],
) -> None:
    folder, nobody = nobody_dir
    assert _open_as(nobody, f"sqlite:///{folder}/thinkbox.db").stdout.strip() == "opened"
    db_file = folder / "thinkbox.db"
    db_file.chmod(0o400)
    before = db_file.read_bytes()
    proc = _open_as(nobody, f"sqlite:///{db_file}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not writable" in proc.stdout
    assert db_file.read_bytes() == before


def test_a_database_another_process_keeps_locked_is_refused_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open takes the write lock for real: it waits for another writer, then says who is in the way."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 300)
    db_file = tmp_path / "thinkbox.db"
    Database.open(f"sqlite:///{db_file}").dispose()
    holder = sqlite3.connect(db_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ConfigError, match="locked by another process"):
            Database.open(f"sqlite:///{db_file}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    Database.open(f"sqlite:///{db_file}").dispose()
