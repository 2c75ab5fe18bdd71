"""Fixtures of the service tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from thinkbox.service.db import Database

from .postgres_server import PostgresServer, PostgresUnavailable, postgres_server
from .service_support import Running, running_server

# -- databases: every test that takes ``db_url`` or ``database`` runs on SQLite and on PostgreSQL ------------
# The PostgreSQL server is started once per test session (postgres_server.py). Where it cannot be installed
# or started the tests fail, saying why, unless THINKBOX_TEST_ALLOW_NO_POSTGRES=1 lets them skip.

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The test session's PostgreSQL server."""
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as exc:
        if os.environ.get("THINKBOX_TEST_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL cannot run here: {exc}")
        pytest.fail(
            f"PostgreSQL cannot run here: {exc}\n(set THINKBOX_TEST_ALLOW_NO_POSTGRES=1 to skip these tests)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of the session server's own database (shared by the tests that use it)."""
    return postgres.url()


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for this test: a SQLite file, or a new database on the session server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'thinkbox.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{secrets.token_hex(6)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """``db_url`` opened and migrated."""
    db = Database.open(db_url)
    try:
        yield db
    finally:
        db.dispose()


# -- end of the database fixtures ----------------------------------------------------------------------------


# -- a running server per database (the API tests) ------------------------------------------------------
# Accounts: tenant acme with users alice and bob, tenant globex with carol.


@pytest.fixture(scope="session", params=DATABASES)
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server on a loopback port over SQLite, then over PostgreSQL (its own database on the test server)."""
    data_dir = tmp_path_factory.mktemp(f"service-{request.param}")
    url: str | None = None
    name = ""
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres")
        name = f"svc_{secrets.token_hex(4)}"
        url = postgres.create_database(name)
    try:
        with running_server(
            data_dir, url, runs_per_user=6, runs_per_tenant=12, session_idle_s=600
        ) as running:
            yield running
    finally:
        if name:
            request.getfixturevalue("postgres").drop_database(name)
