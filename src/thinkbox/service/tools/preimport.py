"""Saved tools imported into a session before its first run (``service.preimport_tools``).

A small model that is shown ``from tools.business_days import business_days`` in its system prompt tends to
write the function again rather than import it. So, for a session's first run, the service itself runs
``from tools.NAME import f, g`` in the session for the listed tools relevant to the question
(:func:`~thinkbox.service.tools.agent.to_preimport`), and the prompt says they are already imported: a
first step that simply calls ``business_days(...)`` works at once, and lint, which reads the session's
names, accepts it. The import is a cell of the session, not a step of the run: its output reaches neither
the model nor the run's events. A tool whose import fails (removed meanwhile, a module that no longer
imports) is logged and left out; the run goes on without it.

A session rebuilt after a restart (:meth:`~thinkbox.service.sessions.SessionManager.rebuild`, or a first
run resumed) gets its imports again before its recorded cells are replayed, as the first run had them
before its first step: the cells may call the imported names.
"""

from __future__ import annotations

import asyncio
import logging

from thinkbox.config import Settings
from thinkbox.sandbox.session import Session
from thinkbox.service.accounts import Principal
from thinkbox.service.tools import agent as tool_agent
from thinkbox.service.tools.store import ToolStore

log = logging.getLogger(__name__)
IMPORT_TIMEOUT_S = 15.0
"""How long one tool's import may take in the session (it runs the module's top-level code)."""


async def first_run_tools(
    store: ToolStore, owner: Principal, session: Session, question: str, settings: Settings
) -> str:
    """The system prompt's tools section for the first run of ``session`` (see
    :func:`~thinkbox.service.tools.agent.tools_section`); with ``service.preimport_tools`` on and a Python
    session, the relevant listed tools are imported into it first and their lines say so."""
    svc = settings.service
    tools = await asyncio.to_thread(store.list_tools, owner)
    imported: list[str] = []
    python = session.config.language == "py" and settings.agent.language in ("py", "auto")
    if svc.preimport_tools and python:
        wanted = tool_agent.to_preimport(tools, question, svc.prompt_tools)
        imported = await import_tools(session, wanted)
    return tool_agent.tools_section(tools, question, svc.prompt_tools, svc.harvest_tools, imported)


async def import_tools(session: Session, wanted: dict[str, list[str]]) -> list[str]:
    """Run ``from tools.NAME import f, g`` in ``session`` for each of ``wanted`` (tool -> functions); the
    tools whose import worked. Output is dropped; a failure is logged and skips that tool only (an
    interpreter killed by one drops them all: its state is gone)."""
    imported = []
    for name, functions in wanted.items():
        names = [f for f in functions if f.isidentifier()]
        if not name.isidentifier() or not names:  # names come from the store's checks; never run other text
            continue
        code = f"from tools.{name} import {', '.join(names)}"
        result = await session.execute(code, timeout=IMPORT_TIMEOUT_S)
        if result.killed:
            log.warning("importing tool %r killed the session's interpreter; no tool pre-imported", name)
            await session.restart()
            return []
        if not result.ok:
            why = f"{result.error.type}: {result.error.message}" if result.error else "it timed out"
            log.warning("tool %r was not pre-imported: %s", name, why[:300])
            continue
        imported.append(name)
    return imported
