"""Tenants, their users and the users' API keys; ``authenticate`` turns a bearer key into a ``Principal``.

A key is ``tbx_`` and 32 random bytes (URL-safe base64). The database keeps only its sha256 and its first
12 characters (``prefix``, to recognise it in lists); the key itself is shown once, at creation.
``authenticate`` answers from a per-process cache for ``AUTH_CACHE_TTL_S`` seconds, so an API request
does not read the database; a key revoked by another process (``thinkbox admin key revoke`` beside a
running server) stops working within that time, one revoked in this process at once; an answer that
streams checks its key again the same way before each part it sends (``authenticate_hash``).

Tenant and user names become folder names (``DATA_DIR/storage/<tenant>/<user>/``), hence their strict
form (``check_name``). Every misuse is a ``ConfigError`` whose message names the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from thinkbox.errors import ConfigError
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import ApiKey, Tenant, User

KEY_PREFIX = "tbx_"
KEY_BYTES = 32
SHOWN_PREFIX_CHARS = 12
MAX_KEY_CHARS = 128
LAST_USED_EVERY_S = 60.0  # last_used_at is written at most this often per key
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAME_RULE = "1-63 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"


@dataclass(frozen=True)
class Principal:
    """Who an API request acts for."""

    tenant_id: str
    tenant_name: str
    user_id: str
    user_name: str
    key_id: str


def check_name(kind: str, name: str) -> str:
    """``name`` when it is a valid tenant or user name (``kind`` says which, for the message)."""
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"invalid {kind} name {name!r}: use {NAME_RULE}")
    return name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# -- tenants -------------------------------------------------------------------------------------------------


def create_tenant(db: Database, name: str) -> Tenant:
    check_name("tenant", name)
    with db.session() as s:
        if s.scalar(select(Tenant).where(Tenant.name == name)) is not None:
            raise ConfigError(f"tenant {name!r} already exists (see `thinkbox admin tenant list`)")
        tenant = Tenant(name=name)
        s.add(tenant)
        _commit(s, f"tenant {name!r} already exists (see `thinkbox admin tenant list`)")
        return tenant


def list_tenants(db: Database) -> list[Tenant]:
    with db.session() as s:
        return list(s.scalars(select(Tenant).order_by(Tenant.name)))


def get_tenant(db: Database, name: str) -> Tenant:
    with db.session() as s:
        tenant = s.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise ConfigError(f"no tenant {name!r}: create it with `thinkbox admin tenant create {name}`")
    return tenant


# -- users ---------------------------------------------------------------------------------------------------


def create_user(db: Database, tenant_name: str, user_name: str) -> User:
    check_name("user", user_name)
    tenant = get_tenant(db, tenant_name)
    exists = f"user {user_name!r} of tenant {tenant_name!r} already exists"
    with db.session() as s:
        if s.scalar(select(User).where(User.tenant_id == tenant.id, User.name == user_name)) is not None:
            raise ConfigError(exists)
        user = User(tenant_id=tenant.id, name=user_name)
        s.add(user)
        _commit(s, exists)
        return user


def list_users(db: Database, tenant_name: str | None = None) -> list[tuple[Tenant, User]]:
    query = select(Tenant, User).join(User, User.tenant_id == Tenant.id).order_by(Tenant.name, User.name)
    if tenant_name is not None:
        query = query.where(Tenant.id == get_tenant(db, tenant_name).id)
    with db.session() as s:
        return [(tenant, user) for tenant, user in s.execute(query)]


def get_user(db: Database, tenant_name: str, user_name: str) -> User:
    tenant = get_tenant(db, tenant_name)
    with db.session() as s:
        user = s.scalar(select(User).where(User.tenant_id == tenant.id, User.name == user_name))
    if user is None:
        raise ConfigError(
            f"no user {user_name!r} in tenant {tenant_name!r}: create it with "
            f"`thinkbox admin user create {tenant_name} {user_name}`"
        )
    return user


# -- keys ----------------------------------------------------------------------------------------------------


def create_key(db: Database, tenant_name: str, user_name: str) -> tuple[ApiKey, str]:
    """A new key of the user: the stored row and the key itself (shown once, never stored)."""
    user = get_user(db, tenant_name, user_name)
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    row = ApiKey(user_id=user.id, key_hash=hash_key(key), prefix=key[:SHOWN_PREFIX_CHARS])
    with db.session() as s:
        s.add(row)
        s.commit()
    return row, key


def list_keys(
    db: Database, tenant_name: str | None = None, user_name: str | None = None
) -> list[tuple[Tenant, User, ApiKey]]:
    """Keys (revoked ones too) with their user and tenant, oldest first."""
    query = (
        select(Tenant, User, ApiKey)
        .join(User, User.tenant_id == Tenant.id)
        .join(ApiKey, ApiKey.user_id == User.id)
        .order_by(Tenant.name, User.name, ApiKey.created_at)
    )
    if user_name is not None:
        if tenant_name is None:
            raise ConfigError("give the tenant before the user: thinkbox admin key list TENANT USER")
        query = query.where(User.id == get_user(db, tenant_name, user_name).id)
    elif tenant_name is not None:
        query = query.where(Tenant.id == get_tenant(db, tenant_name).id)
    with db.session() as s:
        return [(tenant, user, key) for tenant, user, key in s.execute(query)]


def revoke_key(db: Database, key_id_or_prefix: str) -> ApiKey:
    """Revoke the key with this id, shown prefix (or a unique start of either), or this very key.

    Revoking a revoked key changes nothing and returns it."""
    ref = key_id_or_prefix.strip()
    if not ref:
        raise ConfigError("give the key's id or prefix (see `thinkbox admin key list`)")
    with db.session() as s:
        exact = [ApiKey.id == ref, ApiKey.prefix == ref, ApiKey.key_hash == hash_key(ref)]
        rows = list(s.scalars(select(ApiKey).where(or_(*exact))))
        if not rows:
            starts = or_(
                ApiKey.id.startswith(ref, autoescape=True), ApiKey.prefix.startswith(ref, autoescape=True)
            )
            rows = list(s.scalars(select(ApiKey).where(starts)))
        if not rows:
            raise ConfigError(f"no key {ref!r}: give a key id or prefix from `thinkbox admin key list`")
        if len(rows) > 1:
            ids = ", ".join(sorted(row.id for row in rows)[:5])
            raise ConfigError(f"{ref!r} matches {len(rows)} keys ({ids}): give the whole key id")
        row = rows[0]
        if row.revoked_at is None:
            row.revoked_at = time.time()
            s.commit()
    db.auth_cache.pop(row.key_hash)
    return row


def authenticate(db: Database, key: str) -> Principal | None:
    """Who ``key`` belongs to; None for a malformed, unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_CHARS:
        return None
    return authenticate_hash(db, hash_key(key))


def cached_principal(db: Database, digest: str) -> Principal | None:
    """Who the key with this sha256 belongs to, when the cache knows (no database read); else None."""
    return db.auth_cache.get(digest)


def authenticate_hash(db: Database, digest: str) -> Principal | None:
    """``authenticate`` for the key with this sha256 (what a long answer keeps to check its key again)."""
    cached = db.auth_cache.get(digest)
    if cached is not None:
        return cached
    query = (
        select(ApiKey, User, Tenant)
        .join(User, ApiKey.user_id == User.id)
        .join(Tenant, User.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == digest)
    )
    with db.session() as s:
        found = s.execute(query).first()
        if found is None:
            return None
        row, user, tenant = found
        # The lookup went through the unique index; compare the whole hash in constant time all the same.
        if not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
            return None
        now = time.time()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY_S:
            row.last_used_at = now
            s.commit()
    principal = Principal(tenant.id, tenant.name, user.id, user.name, row.id)
    db.auth_cache.put(digest, principal)
    return principal


def local_principal(db: Database, tenant_name: str, user_name: str) -> Principal:
    """The user ``tenant_name/user_name``, made (with the tenant) when missing: who a local client without a
    key acts as (``thinkbox mcp`` over stdio)."""
    for make in (lambda: create_tenant(db, tenant_name), lambda: create_user(db, tenant_name, user_name)):
        with contextlib.suppress(ConfigError):  # exists already (maybe made by another process just now)
            make()
    user = get_user(db, tenant_name, user_name)
    return Principal(user.tenant_id, tenant_name, user.id, user_name, key_id="")


def clear_auth_cache(db: Database) -> None:
    """Forget every cached key, so the next ``authenticate`` reads the database."""
    db.auth_cache.clear()


def _commit(s: Session, exists_message: str) -> None:
    """Commit, turning a unique-constraint race with another process into the same ConfigError."""
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise ConfigError(exists_message) from None
