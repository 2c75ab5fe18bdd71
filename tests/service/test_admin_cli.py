"""Tenants, users and API keys: ``thinkbox admin ...`` as an operator runs it (the installed entry point in a
subprocess, and the same app in-process for the many refusals), and ``accounts`` on both databases."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkbox.cli.app import app
from thinkbox.errors import ConfigError
from thinkbox.service import accounts
from thinkbox.service.db import ApiKey, Database
from thinkbox.service.storage import FOLDER_ID

THINKBOX = Path(sys.executable).parent / "thinkbox"
KEY_RE = re.compile(r"^tbx_[A-Za-z0-9_-]{43}$")
runner = CliRunner()


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No THINKBOX_* settings from outside; the data dir is a fresh folder."""
    for key in list(os.environ):
        if key.startswith("THINKBOX_") and key != "THINKBOX_TEST_ALLOW_NO_POSTGRES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("THINKBOX_CONFIG", str(tmp_path / "absent.toml"))
    return tmp_path / "data"


def admin(data_dir: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """``thinkbox admin ARGS --data-dir DATA_DIR [--database-url URL]`` in a subprocess."""
    extra = ["--database-url", db_url] if db_url else []
    return subprocess.run(
        [str(THINKBOX), "admin", *args, "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin_here(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """The same command in this process: exit status, stdout, stderr."""
    result = runner.invoke(app, ["admin", *args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


def test_key_create_prints_the_key_alone_on_its_last_line_and_stores_only_its_hash(data_dir: Path) -> None:
    assert admin(data_dir, "tenant", "create", "acme").returncode == 0
    assert admin(data_dir, "user", "create", "acme", "alice").returncode == 0
    proc = admin(data_dir, "key", "create", "acme", "alice")
    assert proc.returncode == 0, proc.stderr
    *before, key = proc.stdout.splitlines()
    assert KEY_RE.match(key), proc.stdout
    assert "shown once" in before[-1] and "alice" in before[-1] and "acme" in before[-1]

    stored = b"".join(p.read_bytes() for p in data_dir.glob("thinkbox.db*"))  # with the WAL file
    assert key.encode() not in stored
    assert key[4:].encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored  # the search does see the data

    db = Database.open(f"sqlite:///{data_dir}/thinkbox.db")
    try:
        who = accounts.authenticate(db, key)
        assert who is not None
        assert (who.tenant_name, who.user_name) == ("acme", "alice")
        assert who.key_id == before[-1].split()[1]
    finally:
        db.dispose()
    shared, own = data_dir / "storage" / "acme", data_dir / "storage" / "acme" / "alice"
    assert shared.is_dir() and shared.stat().st_mode & 0o777 == 0o755
    # the user's folder is made as the service makes it: only that user's sessions can enter it
    assert own.is_dir() and own.stat().st_mode & 0o777 == (0o770 if os.geteuid() == 0 else 0o700)
    if os.geteuid() == 0:
        assert own.stat().st_gid == FOLDER_ID


def test_a_key_revoked_by_another_process_stops_working_within_the_cache_time(
    data_dir: Path, db_url: str
) -> None:
    for args in (("tenant", "create", "acme"), ("user", "create", "acme", "bob")):
        assert admin(data_dir, *args, db_url=db_url).returncode == 0
    key = admin(data_dir, "key", "create", "acme", "bob", db_url=db_url).stdout.splitlines()[-1]
    db = Database.open(db_url)
    try:
        db.auth_cache.ttl_s = ttl = 2.0
        cached_at = time.monotonic()
        assert accounts.authenticate(db, key) is not None
        proc = admin(data_dir, "key", "revoke", key[:12], db_url=db_url)  # the server does not hear of it
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("revoked key k_")
        revoked_at = time.monotonic()  # the CLI's start alone can outlast the TTL on a loaded machine
        while accounts.authenticate(db, key) is not None:
            time.sleep(0.05)
        assert time.monotonic() < max(cached_at + ttl, revoked_at) + 0.5
        again = admin(data_dir, "key", "revoke", key[:12], db_url=db_url)
        assert again.returncode == 0 and "already revoked" in again.stdout
    finally:
        db.dispose()


def test_a_second_tenant_of_the_same_name_is_refused(data_dir: Path) -> None:
    assert admin(data_dir, "tenant", "create", "acme").returncode == 0
    proc = admin(data_dir, "tenant", "create", "acme")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "thinkbox: tenant 'acme' already exists (see `thinkbox admin tenant list`)"
    assert proc.stdout == ""


@pytest.mark.parametrize("name", ["../x", "A B", "", "a" * 70, "Acme", "x/y", ".hidden", "_x", "é"])
def test_bad_names_are_refused_and_nothing_is_created(data_dir: Path, name: str) -> None:
    code, out, err = admin_here(data_dir, "tenant", "create", name)
    assert code == 2, out
    assert "invalid tenant name" in err and "lowercase letters, digits" in err
    assert admin_here(data_dir, "tenant", "create", "acme")[0] == 0
    code, out, err = admin_here(data_dir, "user", "create", "acme", name)
    assert code == 2, out
    assert "invalid user name" in err
    assert admin_here(data_dir, "user", "list")[1].startswith("no users yet")
    assert sorted(p.name for p in (data_dir / "storage").iterdir()) == ["acme"]
    assert list((data_dir / "storage" / "acme").iterdir()) == []


def test_the_longest_name_is_accepted(data_dir: Path) -> None:
    name = "a" * 63
    assert admin_here(data_dir, "tenant", "create", name)[0] == 0
    assert admin_here(data_dir, "user", "create", name, name)[0] == 0
    assert (data_dir / "storage" / name / name).is_dir()


def test_lists_show_what_was_created(data_dir: Path) -> None:
    for args in (
        ("tenant", "create", "acme"),
        ("tenant", "create", "globex"),
        ("user", "create", "acme", "alice"),
        ("user", "create", "acme", "bob"),
        ("user", "create", "globex", "carol"),
    ):
        assert admin_here(data_dir, *args)[0] == 0, args
    key_id = admin_here(data_dir, "key", "create", "acme", "bob")[1].split()[1]
    admin_here(data_dir, "key", "create", "globex", "carol")

    tenants = admin_here(data_dir, "tenant", "list")[1].splitlines()
    assert tenants[0].split() == ["tenant", "id", "users", "created"]
    assert [(line.split()[0], line.split()[2]) for line in tenants[1:]] == [("acme", "2"), ("globex", "1")]

    users = admin_here(data_dir, "user", "list")[1].splitlines()
    assert [tuple(line.split()[:2]) for line in users[1:]] == [
        ("acme", "alice"),
        ("acme", "bob"),
        ("globex", "carol"),
    ]
    acme = admin_here(data_dir, "user", "list", "acme")[1].splitlines()
    assert [line.split()[1] for line in acme[1:]] == ["alice", "bob"]

    keys = admin_here(data_dir, "key", "list")[1].splitlines()
    assert keys[0].split()[:4] == ["id", "prefix", "tenant", "user"]
    assert [tuple(line.split()[2:4]) for line in keys[1:]] == [("acme", "bob"), ("globex", "carol")]
    assert admin_here(data_dir, "key", "revoke", key_id)[0] == 0
    (bob,) = admin_here(data_dir, "key", "list", "acme", "bob")[1].splitlines()[1:]
    assert bob.split()[0] == key_id
    assert (
        len(bob.split()) == 4 + 2 + 2
    )  # id, prefix, tenant, user; created, revoked (a date and a time each)
    assert admin_here(data_dir, "key", "list", "globex")[1].count("carol") == 1


def test_unknown_tenant_user_or_key_is_refused_saying_how_to_fix_it(data_dir: Path) -> None:
    code, _, err = admin_here(data_dir, "user", "create", "nope", "alice")
    assert code == 2 and "thinkbox admin tenant create nope" in err
    assert not (data_dir / "storage" / "nope").exists()
    admin_here(data_dir, "tenant", "create", "acme")
    code, _, err = admin_here(data_dir, "key", "create", "acme", "ghost")
    assert code == 2 and "thinkbox admin user create acme ghost" in err
    code, _, err = admin_here(data_dir, "key", "revoke", "k_0000")
    assert code == 2 and "no key 'k_0000'" in err
    code, _, err = admin_here(data_dir, "user", "list", "nope")
    assert code == 2 and "no tenant 'nope'" in err


def test_a_data_dir_that_cannot_hold_the_database_exits_2(data_dir: Path) -> None:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.write_text("a file, not a folder")
    code, _, err = admin_here(data_dir, "tenant", "list")
    assert code == 2
    assert err.startswith("thinkbox: the database ") and "not writable" in err


# -- accounts, on SQLite and PostgreSQL ----------------------------------------------------------------------


def _alice(db: Database) -> str:
    accounts.create_tenant(db, "acme")
    accounts.create_user(db, "acme", "alice")
    _, key = accounts.create_key(db, "acme", "alice")
    return key


def test_accounts_create_list_and_get(database: Database) -> None:
    acme = accounts.create_tenant(database, "acme")
    accounts.create_tenant(database, "globex")
    alice = accounts.create_user(database, "acme", "alice")
    accounts.create_user(database, "globex", "alice")  # the same name in another tenant is another user
    assert acme.id.startswith("t_") and alice.id.startswith("u_") and alice.tenant_id == acme.id
    assert [t.name for t in accounts.list_tenants(database)] == ["acme", "globex"]
    assert [(t.name, u.name) for t, u in accounts.list_users(database)] == [
        ("acme", "alice"),
        ("globex", "alice"),
    ]
    assert [u.name for _, u in accounts.list_users(database, "acme")] == ["alice"]
    assert accounts.get_user(database, "acme", "alice").id == alice.id
    assert accounts.get_tenant(database, "acme").id == acme.id
    with pytest.raises(ConfigError, match="already exists"):
        accounts.create_tenant(database, "acme")
    with pytest.raises(ConfigError, match="already exists"):
        accounts.create_user(database, "acme", "alice")
    with pytest.raises(ConfigError, match="no user 'bob' in tenant 'acme'"):
        accounts.get_user(database, "acme", "bob")


def test_a_key_authenticates_its_user_and_nothing_else_does(database: Database) -> None:
    key = _alice(database)
    who = accounts.authenticate(database, key)
    assert who is not None
    tenant = accounts.get_tenant(database, "acme")
    user = accounts.get_user(database, "acme", "alice")
    ((_, _, row),) = accounts.list_keys(database)
    assert who == accounts.Principal(tenant.id, "acme", user.id, "alice", row.id)
    assert row.prefix == key[:12] and row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    for wrong in ("", key[:-1], key + "x", key.upper(), "tbx_" + "A" * 43, "Bearer " + key, "x" * 10_000):
        assert accounts.authenticate(database, wrong) is None, wrong


def test_revoking_in_this_process_works_at_once(database: Database) -> None:
    key = _alice(database)
    assert accounts.authenticate(database, key) is not None
    accounts.revoke_key(database, key[:12])
    assert accounts.authenticate(database, key) is None


def test_a_key_is_found_by_id_prefix_or_itself_and_ambiguity_is_refused(database: Database) -> None:
    key1 = _alice(database)
    row2, key2 = accounts.create_key(database, "acme", "alice")
    with pytest.raises(ConfigError, match="matches 2 keys"):
        accounts.revoke_key(database, "tbx_")
    with pytest.raises(ConfigError, match="matches 2 keys"):
        accounts.revoke_key(database, "k_")
    assert accounts.revoke_key(database, key1).revoked_at is not None  # the whole key, as leaked
    assert accounts.revoke_key(database, row2.id[:8]).id == row2.id
    assert accounts.authenticate(database, key2) is None
    with pytest.raises(ConfigError, match="no key"):
        accounts.revoke_key(database, "k_missing")


def test_last_use_is_written_at_most_once_a_minute(database: Database) -> None:
    key = _alice(database)
    assert accounts.authenticate(database, key) is not None
    ((_, _, first),) = accounts.list_keys(database)
    assert first.last_used_at is not None
    accounts.clear_auth_cache(database)
    assert accounts.authenticate(database, key) is not None  # read from the database again
    ((_, _, second),) = accounts.list_keys(database)
    assert second.last_used_at == first.last_used_at
    with database.session() as s:  # a minute later
        row = s.get(ApiKey, first.id)
        assert row is not None
        row.last_used_at = first.last_used_at - 61
        s.commit()
    accounts.clear_auth_cache(database)
    accounts.authenticate(database, key)
    ((_, _, third),) = accounts.list_keys(database)
    assert third.last_used_at is not None and third.last_used_at > first.last_used_at - 1


def test_cached_authentication_does_not_read_the_database(database: Database) -> None:
    key = _alice(database)
    accounts.authenticate(database, key)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    from sqlalchemy import event

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        for _ in range(100):
            assert accounts.authenticate(database, key) is not None
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    assert statements == []


def test_many_threads_authenticate_at_once(database: Database) -> None:
    key = _alice(database)
    results: list[object] = []

    def work() -> None:
        for _ in range(20):
            accounts.clear_auth_cache(database)
            results.append(accounts.authenticate(database, key))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160 and all(r is not None for r in results)


def test_list_keys_needs_the_tenant_to_name_a_user(database: Database) -> None:
    with pytest.raises(ConfigError, match="give the tenant"):
        accounts.list_keys(database, None, "alice")
