"""The service's parts, built from the settings and started together (the API holds one :class:`Service`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from thinkbox.config import Settings
from thinkbox.models.base import ModelBackend
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.conversations import Conversations
from thinkbox.service.db.engine import Database, database_url, private_folder
from thinkbox.service.egress import Egress
from thinkbox.service.journal import Journal
from thinkbox.service.runs import RunManager
from thinkbox.service.secrets.keys import Keyring
from thinkbox.service.secrets.redact import LOGS
from thinkbox.service.secrets.store import SecretStore
from thinkbox.service.sessions import SessionManager
from thinkbox.service.storage import Storage
from thinkbox.service.tools import ToolStore

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    db: Database
    storage: Storage
    backend: SandboxBackend
    model: ModelBackend
    journal: Journal
    sessions: SessionManager
    runs: RunManager
    tools: ToolStore
    secrets: SecretStore
    egress: Egress | None = None
    resumed: int = 0
    conversations: Conversations = field(default_factory=Conversations)
    """Chat conversations of the OpenAI-compatible API -> their sessions (in memory)."""
    started_at: float = field(default_factory=time.time)
    _owned: list[str] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        model: ModelBackend | None = None,
        backend: SandboxBackend | None = None,
        db: Database | None = None,
        resume: bool = True,
    ) -> Service:
        """Open the database (migrating it), start the sandbox backend, load the model's weights (a local
        model's first run then starts at once), resume runs that a crash interrupted (unless ``resume`` is
        false). Parts passed in belong to the caller; the others are closed by :meth:`aclose`."""
        owned = []
        # database, storage and key checks run in worker threads; asyncio's default pool (cores + 4)
        # queues them behind each other under a burst of runs
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=settings.service.worker_threads, thread_name_prefix="thinkbox")
        )
        await asyncio.to_thread(private_folder, settings.data_dir)  # whatever database it uses
        if db is None:
            db = await asyncio.to_thread(Database.open, database_url(settings))
            owned.append("db")
        if backend is None:
            backend = registry.create_backend(
                settings.sandbox.backend, embryos=settings.service.warm_sessions
            )
            await backend.start()
            owned.append("backend")
        if model is None:
            from thinkbox.models.factory import get_model, preload

            model = get_model(settings)
            owned.append("model")
            # loaded now, before anything else runs: llama.cpp points this process's stdout and stderr
            # at /dev/null while it loads, so a reply written meanwhile (to an MCP client over stdio) or a
            # log line would be lost. A load that fails is left to the first run, which reports it.
            await preload(model)
        storage = Storage.from_settings(settings)
        journal = Journal(db)
        journal.start()
        tools = ToolStore(
            db,
            backend,
            settings.data_dir / "tools",
            SessionConfig(limits=settings.sandbox.limits),
            timeout_s=settings.service.tool_test_timeout_s,
        )
        await asyncio.to_thread(tools.sync)
        secrets = SecretStore(db, Keyring(settings.data_dir))
        LOGS.add(secrets.log_redactor)
        egress = None
        if settings.egress.enabled:  # the secret store is the proxy's GrantSource
            egress = await asyncio.to_thread(Egress, settings, db, secrets)
            tools.egress = egress
        sessions = SessionManager(db, backend, storage, settings, tools, secrets, egress)
        sessions.start()
        concurrency = 1 if settings.resolved_provider() == "local" else settings.service.model_concurrency
        runs = RunManager(
            db=db,
            journal=journal,
            sessions=sessions,
            storage=storage,
            model=model,
            settings=settings,
            model_concurrency=concurrency,
            tools=tools,
            secrets=secrets,
        )
        service = cls(
            settings,
            db,
            storage,
            backend,
            model,
            journal,
            sessions,
            runs,
            tools,
            secrets,
            egress,
            _owned=owned,
        )
        service.resumed = await runs.resume_unfinished() if resume else 0
        if service.resumed:
            log.warning("resuming %d runs interrupted by the last stop", service.resumed)
        return service

    async def aclose(self) -> None:
        """Stop: runs still going stay unfinished in the database and go on at the next start."""
        await self.runs.aclose()
        await self.journal.aclose()
        await self.sessions.aclose()
        LOGS.remove(self.secrets.log_redactor)
        if self.egress is not None:
            await self.egress.aclose()
        if "backend" in self._owned:
            await self.backend.aclose()
        if "model" in self._owned:
            close = getattr(self.model, "aclose", None) or getattr(self.model, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
        if "db" in self._owned:
            self.db.dispose()
