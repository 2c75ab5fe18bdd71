"""The tool store: a tenant's tools in the database, every version kept, the active ones on disk for sessions.

A tool is saved only when its tests pass in a fresh sandbox session (:mod:`.runner`). Names are unique per
tenant; a private tool is visible only to its owner (to others it does not exist, but its name is taken).
Any user of the tenant may save a new version of, roll back or delete a tenant-wide tool.

On disk (``root`` is ``DATA_DIR/tools``), written from the database, never edited by hand::

    root/<tenant>/shared/tools/__init__.py    the package (:mod:`.inside`: save_tool, available)
    root/<tenant>/shared/tools/<name>.py      the active version of each tenant-wide tool
    root/<tenant>/users/<user>/tools/<name>.py  the active version of each of the user's private tools

Every session of the tenant mounts ``shared`` read-only at ``/workspace/.tools`` (its ``PYTHONPATH``) and
the user's folder at ``/workspace/.tools-mine``: one copy per tenant, none per session. A file is replaced
by a rename inside the mounted folder, so sessions already running see a new tool at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.types import Mount, SessionConfig
from thinkbox.service.accounts import Principal
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import Tenant, Tool, ToolVersion, User
from thinkbox.service.errors import ApiError
from thinkbox.service.tools import inside
from thinkbox.service.tools.runner import run_tests
from thinkbox.service.tools.spec import Function, ToolSpec, check_name

if TYPE_CHECKING:
    from thinkbox.service.egress import Egress

SHARED_TARGET = "/workspace/.tools"
MINE_TARGET = "/workspace/.tools-mine"


@dataclass(frozen=True)
class ToolInfo:
    """One version of a tool as the API shows it."""

    name: str
    version: int
    active_version: int
    description: str
    functions: list[Function]
    source: str
    tests: str
    packages: list[str]
    secrets: list[str]
    private: bool
    author: str
    tests_passed: int
    created_at: float
    updated_at: float


class ToolStore:
    def __init__(
        self, db: Database, backend: SandboxBackend, root: Path, base: SessionConfig, *, timeout_s: float
    ) -> None:
        self.db, self.backend, self.base, self.timeout_s = db, backend, base, timeout_s
        self.root = Path(root)
        self._locks: dict[str, asyncio.Lock] = {}
        self._disk = threading.Lock()
        """Held from a change's commit to its file's rename, so the files follow the commits' order."""
        self._prepared: set[tuple[str, str]] = set()
        """(tenant, user) whose folders and package this process has made (one check per pair)."""
        self.egress: Egress | None = None
        """The service's egress (set once both exist): test sessions go out as the owner's sessions do."""

    # -- sessions -----------------------------------------------------------------------------------
    def session_config(self, tenant: str, user: str, config: SessionConfig) -> SessionConfig:
        """``config`` plus the tenant's tools (read-only) on the session's ``sys.path``."""
        env = {**config.env, "PYTHONPATH": SHARED_TARGET}
        return config.model_copy(update={"mounts": (*config.mounts, *self.mounts(tenant, user)), "env": env})

    def mounts(self, tenant: str, user: str) -> tuple[Mount, Mount]:
        shared, mine = self._shared(tenant), self._mine(tenant, user)
        if (tenant, user) not in self._prepared:
            for folder in (shared / "tools", mine / "tools"):
                folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            init = shared / "tools" / "__init__.py"
            text = Path(inside.__file__).read_text()
            if not init.exists() or init.read_text() != text:
                _write(init, text)
            self._prepared.add((tenant, user))
        return (
            Mount(source=shared, target=SHARED_TARGET, read_only=True),
            Mount(source=mine, target=MINE_TARGET, read_only=True),
        )

    def _shared(self, tenant: str) -> Path:
        return self.root / tenant / "shared"

    def _mine(self, tenant: str, user: str) -> Path:
        return self.root / tenant / "users" / user

    def _file(self, owner: Principal, private: bool, name: str) -> Path:
        folder = (
            self._mine(owner.tenant_name, owner.user_name) if private else self._shared(owner.tenant_name)
        )
        return folder / "tools" / f"{name}.py"

    # -- saving -------------------------------------------------------------------------------------
    async def save(self, owner: Principal, spec: ToolSpec) -> ToolInfo:
        """Test ``spec`` in a fresh session and keep it as the tool's next, active version.

        :class:`~.spec.ToolRefused` when its tests fail; 409 when the name is another user's private tool
        or the tool's visibility would change."""
        lock = self._locks.setdefault(f"{owner.tenant_id}/{spec.name}", asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self._check_owner, owner, spec)
            passed = await self.test(owner, spec)
            return await asyncio.to_thread(self._insert, owner, spec, passed)

    async def test(self, owner: Principal, spec: ToolSpec) -> int:
        """Run ``spec``'s tests as :meth:`save` does, saving nothing; the number that passed. The session
        goes out through the owner's egress proxy when the service has one (a tool that needs a package
        the user installed, or calls an allowed API, is tested as it will run)."""
        mounts = await asyncio.to_thread(self.mounts, owner.tenant_name, owner.user_name)
        session_id = "s_" + secrets.token_hex(8)
        egress = self.egress
        prepare = None if egress is None else functools.partial(egress.session_config, session_id, owner)
        try:
            return await run_tests(
                self.backend, spec, staging=self.root / ".staging", mounts=mounts, base=self.base,
                timeout_s=self.timeout_s, prepare=prepare,
            )  # fmt: skip
        finally:
            if egress is not None:
                await egress.detach(session_id)

    def _check_owner(self, owner: Principal, spec: ToolSpec) -> None:
        with self.db.session() as s:
            tool = s.scalar(select(Tool).where(Tool.tenant_id == owner.tenant_id, Tool.name == spec.name))
        if tool is not None:
            _may_save(tool, owner, spec)

    def _insert(self, owner: Principal, spec: ToolSpec, passed: int) -> ToolInfo:
        with self._disk:
            return self._insert_locked(owner, spec, passed)

    def _insert_locked(self, owner: Principal, spec: ToolSpec, passed: int) -> ToolInfo:
        now = time.time()
        try:
            with self.db.session() as s, s.begin():
                tool = s.scalar(select(Tool).where(Tool.tenant_id == owner.tenant_id, Tool.name == spec.name))
                if tool is None:
                    tool = Tool(
                        tenant_id=owner.tenant_id,
                        name=spec.name,
                        owner_id=owner.user_id if spec.private else None,
                        active_version=0,
                        created_at=now,
                    )
                    s.add(tool)
                    s.flush()
                else:
                    _may_save(tool, owner, spec)  # again: it may have been made since the check
                    active = s.get(ToolVersion, (tool.id, tool.active_version))
                    if active is not None and _same(active, spec):  # saved again (a resumed run): as it is
                        return _info(tool, active, self._author(s, active))
                last = s.scalar(select(func.max(ToolVersion.version)).where(ToolVersion.tool_id == tool.id))
                version = (last or 0) + 1
                s.add(
                    ToolVersion(
                        tool_id=tool.id,
                        version=version,
                        description=spec.description,
                        source=spec.source,
                        tests=spec.tests,
                        functions=json.dumps([f.__dict__ for f in spec.functions]),
                        packages=json.dumps(list(spec.packages)),
                        secrets=json.dumps(list(spec.secrets)),
                        tests_passed=passed,
                        author_id=owner.user_id,
                        created_at=now,
                    )
                )
                tool.active_version, tool.updated_at = version, now
        except IntegrityError:
            raise ApiError(
                409, "conflict", f"tool {spec.name!r} was saved by someone else at the same moment; try again"
            ) from None
        _write(self._file(owner, spec.private, spec.name), spec.source)  # committed: sessions may see it
        return self.get(owner, spec.name)

    @staticmethod
    def _author(s: DbSession, version: ToolVersion) -> str:
        user = s.get(User, version.author_id)
        return user.name if user is not None else "?"

    # -- reading ------------------------------------------------------------------------------------
    def list_tools(self, owner: Principal) -> list[ToolInfo]:
        """The tools ``owner`` sees (the tenant's and their private ones), active versions, by name."""
        with self.db.session() as s:
            rows = s.execute(self._visible(owner).order_by(Tool.name)).all()
            return [_info(tool, version, author) for tool, version, author in rows]

    def get(self, owner: Principal, name: str, version: int | None = None) -> ToolInfo:
        """The tool's active version (or ``version``); 404 when ``owner`` cannot see it."""
        with self.db.session() as s:
            query = self._visible(owner, version is not None).where(Tool.name == name)
            if version is not None:
                query = query.where(ToolVersion.version == version)
            row = s.execute(query).first()
        if row is None:
            what = f"version {version} of tool" if version is not None else "tool"
            raise ApiError(404, "not_found", f"no {what} {name!r} in your tenant (GET /v1/tools lists them)")
        return _info(*row)

    def versions(self, owner: Principal, name: str) -> list[ToolInfo]:
        """Every version of the tool, newest first."""
        self.get(owner, name)
        with self.db.session() as s:
            query = self._visible(owner, every=True).where(Tool.name == name)
            rows = s.execute(query.order_by(ToolVersion.version.desc())).all()
            return [_info(tool, version, author) for tool, version, author in rows]

    def _visible(self, owner: Principal, every: bool = False) -> Any:
        query = (
            select(Tool, ToolVersion, User.name)
            .join(ToolVersion, ToolVersion.tool_id == Tool.id)
            .join(User, User.id == ToolVersion.author_id)
            .where(Tool.tenant_id == owner.tenant_id)
            .where((Tool.owner_id.is_(None)) | (Tool.owner_id == owner.user_id))
        )
        return query if every else query.where(ToolVersion.version == Tool.active_version)

    # -- changing -----------------------------------------------------------------------------------
    def rollback(self, owner: Principal, name: str, version: int) -> ToolInfo:
        """Make ``version`` the active one (sessions see it at once)."""
        info = self.get(owner, name, version)
        with self._disk:
            with self.db.session() as s, s.begin():
                tool = s.scalar(select(Tool).where(Tool.tenant_id == owner.tenant_id, Tool.name == name))
                assert tool is not None
                tool.active_version, tool.updated_at = version, time.time()
            _write(self._file(owner, info.private, name), info.source)
        return self.get(owner, name)

    def delete(self, owner: Principal, name: str) -> None:
        """Delete the tool and all its versions (sessions that imported it keep their copy)."""
        info = self.get(owner, name)
        with self._disk:
            with self.db.session() as s, s.begin():
                tool = s.scalar(select(Tool).where(Tool.tenant_id == owner.tenant_id, Tool.name == name))
                assert tool is not None
                s.execute(delete(ToolVersion).where(ToolVersion.tool_id == tool.id))
                s.delete(tool)
            self._file(owner, info.private, name).unlink(missing_ok=True)

    def sync(self) -> None:
        """Write every active tool to disk from the database, removing files of tools that are gone (at
        start: the database is what counts after a crash between a commit and a rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # tenants' code: sessions get binds, other host users nothing
        wanted: dict[Path, str] = {}
        with self.db.session() as s:
            rows = s.execute(
                select(Tenant.name, User.name, Tool, ToolVersion)
                .join(Tool, Tool.tenant_id == Tenant.id)
                .join(
                    ToolVersion,
                    (ToolVersion.tool_id == Tool.id) & (ToolVersion.version == Tool.active_version),
                )
                .outerjoin(User, User.id == Tool.owner_id)
            ).all()
        for tenant, user, tool, version in rows:
            folder = self._mine(tenant, user) if user else self._shared(tenant)
            wanted[folder / "tools" / f"{tool.name}.py"] = version.source
        for path, text in wanted.items():
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                _write(path, text)
        for path in self.root.glob("*/*/tools/*.py"):
            if path.name != "__init__.py" and path not in wanted:
                path.unlink(missing_ok=True)
        for path in self.root.glob("*/users/*/tools/*.py"):
            if path not in wanted:
                path.unlink(missing_ok=True)
        shutil.rmtree(self.root / ".staging", ignore_errors=True)


def _may_save(tool: Tool, owner: Principal, spec: ToolSpec) -> None:
    """409 when ``owner`` may not save a version of ``tool`` as ``spec`` says."""
    if tool.owner_id is not None and tool.owner_id != owner.user_id:
        raise ApiError(
            409, "name_taken", f"the name {spec.name!r} is taken in your tenant; choose another name"
        )
    if (tool.owner_id is not None) != spec.private:
        was = "private" if tool.owner_id else "tenant-wide"
        raise ApiError(
            409,
            "visibility_conflict",
            f"tool {spec.name!r} is {was}; save it with the same 'private' value, or delete it first",
        )


def _same(version: ToolVersion, spec: ToolSpec) -> bool:
    return (version.source, version.tests, version.description, json.loads(version.packages)) == (
        spec.source,
        spec.tests,
        spec.description,
        list(spec.packages),
    ) and json.loads(version.secrets) == list(spec.secrets)


def _info(tool: Tool, version: ToolVersion, author: str) -> ToolInfo:
    return ToolInfo(
        name=tool.name,
        version=version.version,
        active_version=tool.active_version,
        description=version.description,
        functions=[Function(**f) for f in json.loads(version.functions)],
        source=version.source,
        tests=version.tests,
        packages=json.loads(version.packages),
        secrets=json.loads(version.secrets),
        private=tool.owner_id is not None,
        author=author,
        tests_passed=version.tests_passed,
        created_at=version.created_at,
        updated_at=tool.updated_at,
    )


def _write(path: Path, text: str) -> None:
    """Replace ``path`` by a rename in its folder (a session never reads half a file)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    # a name of its own per call: the service's threads prepare one tenant's folder at the same time
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["ToolInfo", "ToolStore", "check_name"]
