"""Opening the service's database: SQLite by default, PostgreSQL for a shared deployment.

``Database.open(url)`` creates the engine, proves that it can write there (a read-only data dir or an
unreachable server is a ``ConfigError`` saying what to fix, before anything else happens) and brings the
schema to the newest Alembic revision, all in one transaction that holds the database's write lock: on
SQLite a ``BEGIN IMMEDIATE``, on PostgreSQL an advisory lock. Two processes opening the same database at
once (the server and an admin command) therefore migrate it once, one after the other.

A SQLite database that does not exist yet is made mode 0600 (SQLite gives its ``-wal``, ``-shm`` and
``-journal`` files the database's mode), in a folder made 0700 if it is missing.

SQLite runs in WAL mode (readers never wait for the writer), ``synchronous=NORMAL`` (a commit survives a
crash of the process; only a power cut may lose the last transactions), a 10 s busy timeout and foreign
keys on. The sqlite3 module's default transaction handling is kept: it begins a transaction at the first
write, not at a read, so a session that reads then writes asks for the write lock only when it writes and
waits for it (busy timeout) instead of failing on a stale read snapshot.

One ``Database`` is shared by the threads of a process; each operation takes its own ``session()``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from thinkbox.errors import ConfigError

if TYPE_CHECKING:
    from thinkbox.config import Settings
    from thinkbox.service.accounts import Principal

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_SIZE = 10
PG_CONNECT_TIMEOUT_S = 10
PG_MIGRATION_LOCK = 0x7468696E6B626F78  # "thinkbox": the advisory lock held while migrating
AUTH_CACHE_TTL_S = 5.0

K = TypeVar("K")
V = TypeVar("V")


def database_url(settings: Settings) -> str:
    """``service.database_url``, or the default SQLite file ``DATA_DIR/thinkbox.db``."""
    if settings.service.database_url:
        return settings.service.database_url
    return f"sqlite:///{settings.data_dir}/thinkbox.db"


class TTLCache(Generic[K, V]):
    """A small thread-safe map whose entries are forgotten ``ttl_s`` after they were put."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if time.monotonic() >= item[0]:
                del self._items[key]
                return None
            return item[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (time.monotonic() + self.ttl_s, value)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Database:
    """The engine, a session factory and what is cached in front of the database in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=False)
        self.dialect = engine.dialect.name
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self.auth_cache: TTLCache[str, Principal] = TTLCache(AUTH_CACHE_TTL_S)
        """API key hash -> who it authenticates (``accounts.authenticate``)."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        """Connect to ``url``, check that it is writable, and (``migrate``) upgrade its schema to the head."""
        parsed = _parse(url)
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed)
        else:
            engine = create_engine(
                parsed,
                pool_size=POOL_SIZE,
                max_overflow=POOL_SIZE,
                pool_pre_ping=True,
                connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
            )
        try:
            with _write_transaction(engine) as conn:
                if migrate:
                    _upgrade(conn)
                    conn.commit()
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        return _masked(self.engine.url)

    def session(self) -> Session:
        """A new ORM session (one per thread and operation); objects stay readable after commit."""
        return self._sessions()

    def revision(self) -> str | None:
        """The schema's current Alembic revision (None: not migrated)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"


def head_revision() -> str | None:
    """The newest revision shipped with this version of thinkbox."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"service.database_url {url!r} is not a database URL: use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver thinkbox ships
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.drivername != "sqlite":
            raise ConfigError(
                f"service.database_url {url!r}: give SQLite a file, sqlite:///PATH (a memory database is "
                "lost at exit and not shared between connections)"
            )
    elif backend != "postgresql":
        raise ConfigError(
            f"service.database_url {_masked(parsed)!r}: only SQLite (sqlite:///PATH) and PostgreSQL "
            "(postgresql+psycopg://...) are supported"
        )
    return parsed


def _masked(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url: URL) -> Engine:
    path = Path(url.database or "").absolute()
    _check_sqlite_access(path)
    engine = create_engine(
        url.set(database=str(path)),
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine


def _not_writable(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"the database {path} is not writable ({why}): fix its permissions or choose another --data-dir"
    )


def _check_sqlite_access(path: Path) -> None:
    """The folder must exist and take new files (the WAL and shared-memory files sit beside the
    database), the file must be writable: checked by mode here for a clear reason, and by a real write
    transaction right after (root passes every mode check)."""
    folder = path.parent
    try:
        private_folder(folder)
    except OSError as exc:
        raise _not_writable(path, f"cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _not_writable(path, f"its folder {folder} is read-only for uid {os.geteuid()}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise _not_writable(path, f"the file is read-only for uid {os.geteuid()}")
    try:  # made here, 0600, before SQLite makes it with the umask; its -wal and -shm take its mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass  # an existing database keeps its mode
    except OSError as exc:
        raise _not_writable(path, f"cannot create it: {exc.strerror}") from None


def private_folder(folder: Path) -> None:
    """Create ``folder`` if it is missing, mode 0700 (its missing parents with the umask), so the host's
    other accounts cannot read what the service keeps there; a folder that exists keeps its mode (the
    operator's choice)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


@contextmanager
def _write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that already holds the right to write (on PostgreSQL also the
    migration lock); rolled back at the end unless the caller committed."""
    url = engine.url
    try:
        conn = engine.connect()
    except OperationalError as exc:
        raise _cannot_write(url, exc) from None
    with conn:
        try:
            if url.get_backend_name() == "sqlite":
                # Takes the write lock now: fails on a read-only file or folder, waits for another writer.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                if conn.execute(text("SHOW transaction_read_only")).scalar() == "on":
                    raise ConfigError(
                        f"the database {_masked(url)} is read-only (a standby?): point "
                        "service.database_url at the primary server"
                    )
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
        except OperationalError as exc:
            raise _cannot_write(url, exc) from None
        yield conn


def _cannot_write(url: URL, exc: OperationalError) -> ConfigError:
    reason = _first_line(exc)
    if url.get_backend_name() != "sqlite":
        return ConfigError(
            f"cannot connect to the database {_masked(url)} ({reason}): start the server or fix "
            "service.database_url (--database-url, THINKBOX_SERVICE__DATABASE_URL)"
        )
    if "locked" in reason:
        return ConfigError(
            f"the database {url.database} is locked by another process for over "
            f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s ({reason}): stop it or try again"
        )
    return _not_writable(Path(url.database or ""), reason)


def _upgrade(conn: Connection) -> None:
    try:
        command.upgrade(_alembic_config(conn), "head")
    except DBAPIError as exc:
        raise ConfigError(
            f"could not migrate the database {_masked(conn.engine.url)} to this version's schema "
            f"({_first_line(exc)}): check the database user's privileges"
        ) from None


def _alembic_config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _first_line(exc: DBAPIError) -> str:
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__
