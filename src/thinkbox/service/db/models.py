"""The service's tables, as SQLAlchemy 2 declarative models shared by SQLite and PostgreSQL.

Timestamps are unix seconds (``float``), ids are short random strings with a type prefix (``new_id``),
JSON is kept in ``Text`` columns: the same code and the same migrations run on both databases. Schema
changes are Alembic migrations under ``migrations/versions``; ``tests/service/test_db.py`` checks that the
migrated schema and these models agree.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 40
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RUN_ENDED = ("succeeded", "failed", "cancelled")
SESSION_KINDS = ("run", "code")

# Deterministic constraint names: the same on both databases, so later migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix`` (e.g. ``"r_"``) and 16 random hex digits."""
    return prefix + secrets.token_hex(8)


def _ids(prefix: str) -> Callable[[], str]:
    return lambda: new_id(prefix)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("t_"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_users_tenant_id_name"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("u_"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    tenant_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """May set and delete the tenant's tenant-wide secrets (``thinkbox admin user admin``)."""


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("k_"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    # sha256 hex of the whole key. A key is 32 random bytes, so it cannot be guessed from its hash and a fast
    # hash is right (a slow password hash protects low-entropy secrets, and would cost every request).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, shown in lists
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class SessionRow(Base):
    """A sandbox session of one user: ``kind`` "run" (driven by runs) or "code" (``/v1/sessions``)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("s_"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_activity_at: Mapped[float] = mapped_column(Float, default=time.time)
    closed_at: Mapped[float | None] = mapped_column(Float)
    close_reason: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String(16), default="run", server_default="run")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("r_"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    question: Mapped[str] = mapped_column(Text)
    files: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list of paths
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")  # one of RUN_STATUSES
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    steps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    model: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RunEvent(Base):
    """One agent event of a run, numbered from 1 (``seq`` is the SSE event id)."""

    __tablename__ = "run_events"
    __table_args__ = (PrimaryKeyConstraint("run_id", "seq", name="pk_run_events"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)  # the event's JSON
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Tool(Base):
    """A tool of a tenant (private to ``owner_id`` when set): a Python module the tenant's sessions import
    as ``tools.<name>``. Its versions are :class:`ToolVersion` rows; sessions see ``active_version``."""

    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_tools_tenant_id_name"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("x_"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    active_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class ToolVersion(Base):
    """One saved version of a tool (every version is kept; only versions whose tests passed are saved)."""

    __tablename__ = "tool_versions"
    __table_args__ = (PrimaryKeyConstraint("tool_id", "version", name="pk_tool_versions"),)

    tool_id: Mapped[str] = mapped_column(ForeignKey("tools.id"))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    tests: Mapped[str] = mapped_column(Text)
    functions: Mapped[str] = mapped_column(Text)  # JSON list of {name, signature, doc}
    packages: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list
    secrets: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list of names
    tests_passed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    author_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class SecretRow(Base):
    """A named credential of a user (``owner_id``) or of the whole tenant (``owner_id`` NULL), its value
    encrypted (Fernet, the key outside the database: :mod:`thinkbox.service.secrets.keys`)."""

    __tablename__ = "secrets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "owner_key", "name", name="uq_secrets_tenant_id_owner_key_name"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("c_"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    owner_key: Mapped[str] = mapped_column(String(ID_LENGTH))
    """``owner_id``, or "" for a tenant-wide secret: the unique key (NULLs never collide in one)."""
    name: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)  # a Fernet token (url-safe base64)
    hosts: Mapped[str] = mapped_column(Text)  # JSON list of host or host:port patterns
    header: Mapped[str | None] = mapped_column(Text)  # e.g. "Authorization: Bearer {secret}"
    paths: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list of prefixes
    methods: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class NetworkRule(Base):
    """One rule of a tenant's network policy for the egress proxy: ``pattern`` (``host``, ``host:port``,
    ``*.domain``) is allowed or denied. Default deny; a deny rule wins over an allow rule."""

    __tablename__ = "network_rules"
    __table_args__ = (UniqueConstraint("tenant_id", "pattern", name="uq_network_rules_tenant_id_pattern"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=_ids("n_"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    pattern: Mapped[str] = mapped_column(String(270))
    action: Mapped[str] = mapped_column(String(8))  # allow | deny
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
