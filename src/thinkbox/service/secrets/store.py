"""The secret store: named credentials of a user (or tenant-wide), encrypted at rest, never handed back.

A secret is unique per (tenant, owner, name); a tenant-wide one (``owner_id`` NULL, set by a tenant admin)
is usable by every user of the tenant, and a user's own secret of the same name wins over it. The value is
encrypted with the :class:`~.keys.Keyring` (Fernet) before it reaches the database and is decrypted only
for :meth:`SecretStore.grants` (the egress proxy) and the redactors (:mod:`.redact`); the API shows names,
rules and times only.

Redactors are cached per (tenant, user) in this process, rebuilt at once when a secret of theirs changes
here (sessions already running redact a value set after they started) and read again when a session
opens or a run is submitted more than ``REFRESH_S`` after they were read (a change made through another
server). The process's log redaction knows every value a cached redactor knows.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import IntegrityError

from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import SecretRow, User
from thinkbox.service.errors import ApiError
from thinkbox.service.secrets.grant import SecretGrant
from thinkbox.service.secrets.keys import Keyring
from thinkbox.service.secrets.redact import Redactor, SessionRedaction
from thinkbox.service.secrets.rules import NAME_RE, SecretRules

Scope = Literal["user", "tenant"]
REFRESH_S = 30.0
TENANT_WIDE = ""
"""``owner_key`` of a tenant-wide secret (NULL owners never collide in a unique constraint)."""


@dataclass(frozen=True)
class SecretInfo:
    """A secret as the API shows it: never its value."""

    name: str
    scope: Scope
    hosts: list[str]
    header: str | None
    paths: list[str]
    methods: list[str]
    created_at: float
    updated_at: float
    last_used_at: float | None
    active: bool
    """False for a tenant-wide secret that the user's own secret of the same name hides."""


class SecretStore:
    """Implements :class:`~.grant.GrantSource` for the egress proxy."""

    def __init__(self, db: Database, keys: Keyring) -> None:
        self.db, self.keys = db, keys
        self._lock = threading.Lock()
        self._redactors: dict[tuple[str, str], tuple[Redactor, list[tuple[str, str]], float]] = {}
        """(tenant, user) -> their redactor, its (name, value) pairs, when it was read (monotonic)"""
        self._log_redactor = Redactor()

    # -- the API's side ----------------------------------------------------------------------------------
    def put(
        self, who: Principal, name: str, value: str, rules: SecretRules, scope: Scope
    ) -> tuple[SecretInfo, bool]:
        """Store (or replace) the secret; (what it is now, whether it is new). 403 for a tenant-wide
        secret unless ``who`` is a tenant admin."""
        if scope == "tenant":
            self._require_admin(who)
        owner = who.user_id if scope == "user" else None
        ciphertext = self.keys.encrypt(value)
        now = time.time()
        fields = {
            "ciphertext": ciphertext,
            "hosts": json.dumps(list(rules.hosts)),
            "header": rules.header,
            "paths": json.dumps(list(rules.paths)),
            "methods": json.dumps(list(rules.methods)),
            "updated_at": now,
        }
        for attempt in range(2):  # a concurrent first put of the same name: the second one replaces
            with self.db.session() as s:
                row = s.scalar(self._one(who.tenant_id, owner, name))
                created = row is None
                if row is None:
                    row = SecretRow(
                        tenant_id=who.tenant_id,
                        owner_id=owner,
                        owner_key=owner or TENANT_WIDE,
                        name=name,
                        created_at=now,
                        **fields,
                    )
                    s.add(row)
                else:
                    for key, val in fields.items():
                        setattr(row, key, val)
                try:
                    s.commit()
                    break
                except IntegrityError:
                    s.rollback()
                    if attempt:
                        raise ApiError(
                            409, "conflict", f"secret {name!r} changed meanwhile; try again"
                        ) from None
        assert row is not None
        self._changed(who.tenant_id, owner)
        return self._info(row, active=True), created

    def list_secrets(self, who: Principal) -> list[SecretInfo]:
        """The user's secrets and the tenant-wide ones, by name (the user's first)."""
        with self.db.session() as s:
            rows = list(s.scalars(self._visible(who.tenant_id, who.user_id)))
        mine = {row.name for row in rows if row.owner_id is not None}
        infos = [self._info(r, active=r.owner_id is not None or r.name not in mine) for r in rows]
        return sorted(infos, key=lambda i: (i.name, i.scope != "user"))

    def get(self, who: Principal, name: str, scope: Scope | None = None) -> SecretInfo:
        """The secret ``name`` the user's sessions get (``scope`` None), or the one of that scope."""
        found = [
            i for i in self.list_secrets(who) if i.name == name and (i.scope == scope if scope else i.active)
        ]
        if not found:
            raise self._missing(name, scope)
        return found[0]

    def delete(self, who: Principal, name: str, scope: Scope) -> None:
        if scope == "tenant":
            self._require_admin(who)
        owner = who.user_id if scope == "user" else None
        with self.db.session() as s:
            row = s.scalar(self._one(who.tenant_id, owner, name)) if NAME_RE.fullmatch(name) else None
            if row is None:
                raise self._missing(name, scope)
            s.delete(row)
            s.commit()
        self._changed(who.tenant_id, owner)

    def is_admin(self, user_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.scalar(select(User.tenant_admin).where(User.id == user_id)))

    def _require_admin(self, who: Principal) -> None:
        if not self.is_admin(who.user_id):
            raise ApiError(
                403,
                "forbidden",
                "only a tenant admin may set or delete tenant-wide secrets: use scope 'user', or ask an "
                f"operator to run `thinkbox admin user admin {who.tenant_name} {who.user_name}`",
            )

    def _missing(self, name: str, scope: Scope | None) -> ApiError:
        where = {"user": "of yours", "tenant": "of your tenant", None: "you can use"}[scope]
        return ApiError(404, "not_found", f"no secret {name[:80]!r} {where} (GET /v1/secrets lists them)")

    # -- the sessions' side (GrantSource) ----------------------------------------------------------------
    async def grants(self, tenant_id: str, user_id: str) -> list[SecretGrant]:
        """The secrets a session of the user may use: theirs, and the tenant's whose name they do not use."""
        return await asyncio.to_thread(self._grants, tenant_id, user_id)

    async def mark_used(self, tenant_id: str, user_id: str, names: list[str]) -> None:
        await asyncio.to_thread(self._mark_used, tenant_id, user_id, names)

    def redactor(self, tenant_id: str, user_id: str, max_age_s: float | None = None) -> Redactor:
        """The user's redactor: the cached one (younger than ``max_age_s`` when given), else read from the
        database (blocking: call it off the event loop when it may read)."""
        cached = self._redactors.get((tenant_id, user_id))
        if cached is not None and (max_age_s is None or time.monotonic() - cached[2] <= max_age_s):
            return cached[0]
        return self._load_redactor(tenant_id, user_id)

    def session_redaction(self, tenant_id: str, user_id: str) -> SessionRedaction:
        """The output filter of the user's sandbox sessions (warm :meth:`redactor` first, off the loop)."""
        return SessionRedaction(lambda: self.redactor(tenant_id, user_id))

    def log_redactor(self) -> Redactor:
        """Every value this process has loaded, for log records."""
        return self._log_redactor

    def _grants(self, tenant_id: str, user_id: str) -> list[SecretGrant]:
        with self.db.session() as s:
            rows = list(s.scalars(self._visible(tenant_id, user_id)))
        chosen: dict[str, SecretRow] = {}
        for row in rows:  # the user's own first (see _visible): a tenant-wide one of the same name loses
            chosen.setdefault(row.name, row)
        return [
            SecretGrant(
                name=row.name,
                value=self.keys.decrypt(row.ciphertext),
                hosts=tuple(json.loads(row.hosts)),
                header=row.header,
                paths=tuple(json.loads(row.paths)),
                methods=tuple(json.loads(row.methods)),
            )
            for row in chosen.values()
        ]

    def _mark_used(self, tenant_id: str, user_id: str, names: list[str]) -> None:
        with self.db.session() as s:
            rows = list(s.scalars(self._visible(tenant_id, user_id).where(SecretRow.name.in_(names))))
            ids = list({row.name: row.id for row in reversed(rows)}.values())  # the user's own wins
            if ids:
                s.execute(update(SecretRow).where(SecretRow.id.in_(ids)).values(last_used_at=time.time()))
                s.commit()

    def _load_redactor(self, tenant_id: str, user_id: str) -> Redactor:
        pairs = [(g.name, g.value) for g in self._grants(tenant_id, user_id)]
        redactor = Redactor(pairs)
        with self._lock:
            self._redactors[(tenant_id, user_id)] = (redactor, pairs, time.monotonic())
            everything = [pair for _, known, _ in self._redactors.values() for pair in known]
            self._log_redactor = Redactor(everything)
        return redactor

    def _changed(self, tenant_id: str, owner: str | None) -> None:
        """A secret of the tenant (of ``owner``, or tenant-wide) changed: rebuild the redactors it touches."""
        with self._lock:
            touched = [k for k in self._redactors if k[0] == tenant_id and owner in (None, k[1])]
        for key in touched:
            self._load_redactor(*key)

    # -- the operator's side -----------------------------------------------------------------------------
    def rotate_key(self) -> tuple[str, int]:
        """A new key first (the key file's, or the environment's first key), every value re-encrypted with
        it in one transaction; (where the new key is, how many secrets)."""
        where = self.keys.add_key()
        with self.db.session() as s:
            rows = list(s.scalars(select(SecretRow)))
            for row, token in zip(rows, self.keys.rotate(row.ciphertext for row in rows), strict=True):
                row.ciphertext = token
            s.commit()
        return where, len(rows)

    # -- queries -----------------------------------------------------------------------------------------
    @staticmethod
    def _one(tenant_id: str, owner: str | None, name: str) -> Select[SecretRow]:
        return select(SecretRow).where(
            SecretRow.tenant_id == tenant_id,
            SecretRow.owner_key == (owner or TENANT_WIDE),
            SecretRow.name == name,
        )

    @staticmethod
    def _visible(tenant_id: str, user_id: str) -> Select[SecretRow]:
        """The user's rows and the tenant-wide ones, the user's own first within a name."""
        return (
            select(SecretRow)
            .where(
                SecretRow.tenant_id == tenant_id,
                or_(SecretRow.owner_id == user_id, SecretRow.owner_id.is_(None)),
            )
            .order_by(SecretRow.name, SecretRow.owner_key.desc())
        )

    @staticmethod
    def _info(row: SecretRow, *, active: bool) -> SecretInfo:
        return SecretInfo(
            name=row.name,
            scope="user" if row.owner_id is not None else "tenant",
            hosts=json.loads(row.hosts),
            header=row.header,
            paths=json.loads(row.paths),
            methods=json.loads(row.methods),
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_used_at=row.last_used_at,
            active=active,
        )
