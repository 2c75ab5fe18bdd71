"""What the agent sees of the tool store: the tools listed in a run's system prompt, and the answer to a
``save_tool(...)`` the model's code called (read from the step's result, answered in its observation).

Ranking. With more tools than ``service.prompt_tools``, the prompt lists the most relevant to the question
by a lexical score: each word of the question (lower case, split at non-letters and ``_``, stop words
dropped, cut to 5 letters so "primes" meets "prime") that occurs in a tool's name, description, function
names or first docstring lines counts its inverse document frequency over the tenant's tools (a word every
tool has says nothing); ties go to the most recently changed tool. Why this and not embeddings: no second
model on a 2-core machine, the same answer every time for the same tools (the prompt, and so the model's
KV cache, stay stable), and names and descriptions written by the agent itself use the question's words.

Pre-import. Of the listed tools, those with a score above 0 (at most :data:`PREIMPORT_MAX`) may be
imported into the session before the run (:func:`to_preimport`, done by :mod:`.preimport`); their lines
then say so and show the call, not the import.
"""

from __future__ import annotations

import builtins
import json
import keyword
import math
import re
from collections.abc import Collection, Sequence

from thinkbox.sandbox.types import ExecutionResult
from thinkbox.service.accounts import Principal
from thinkbox.service.errors import ApiError
from thinkbox.service.tools.inside import MIME
from thinkbox.service.tools.runner import describe
from thinkbox.service.tools.spec import ToolRefused, check
from thinkbox.service.tools.store import ToolInfo, ToolStore

MAX_REQUESTS_PER_STEP = 3
PREIMPORT_MAX = 3
"""Saved tools imported into a session before its first run, at most (service.preimport_tools)."""
_WORD = re.compile(r"[a-z0-9]+")
# fmt: off
_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in",
    "into", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when",
    "which", "with", "you", "your", "there", "their", "many", "much"
))
# fmt: on
SAVE_HINT = (
    "To save a function you wrote and tested as a tool: from tools import save_tool; "
    'save_tool(f, tests="def test_f():\\n    assert f(2) == 4", description="...")'
)
HARVEST_HINT = (
    "Functions you write and call are saved as tools after your answer when they pass their tests in a "
    "fresh session: you need not save them."
)


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.lower().replace("_", " ")) if w not in _STOP and len(w) > 1}


def _text(tool: ToolInfo) -> str:
    parts = [tool.name, tool.description]
    for f in tool.functions:
        parts += [f.name, f.doc.strip().split("\n")[0] if f.doc else ""]
    return " ".join(parts)


def scores(tools: Sequence[ToolInfo], question: str) -> dict[str, float]:
    """Each tool's lexical score for ``question`` (see the module docstring; 0: no word in common)."""
    stems = {t.name: _stems(_text(t)) for t in tools}
    df: dict[str, int] = {}
    for words in stems.values():
        for w in words:
            df[w] = df.get(w, 0) + 1
    asked = _stems(question)
    n = len(tools)
    return {name: sum(math.log(1 + n / df[w]) for w in asked & words) for name, words in stems.items()}


def rank(tools: Sequence[ToolInfo], question: str) -> list[ToolInfo]:
    """``tools``, most relevant to ``question`` first (see the module docstring)."""
    score = scores(tools, question)
    return sorted(tools, key=lambda t: (score[t.name], t.updated_at), reverse=True)


def listed(tools: Sequence[ToolInfo], question: str, limit: int) -> list[ToolInfo]:
    """The tools the system prompt lists: all of them by name, or past ``limit`` the most relevant."""
    return rank(tools, question)[:limit] if len(tools) > limit else sorted(tools, key=lambda t: t.name)


def importable(tool: ToolInfo) -> list[str]:
    """The functions of ``tool`` that may be imported into a session unasked: not ``_private``, not a
    keyword, not a builtin (importing ``sum`` would hide the builtin from the model's code)."""
    return [
        f.name
        for f in tool.functions
        if f.name.isidentifier()
        and not f.name.startswith("_")
        and not keyword.iskeyword(f.name)
        and not hasattr(builtins, f.name)
    ]


def to_preimport(tools: Sequence[ToolInfo], question: str, limit: int) -> dict[str, list[str]]:
    """The tools to import into a session before its first run (``service.preimport_tools``): of those the
    prompt lists, the most relevant to ``question`` with a score above 0, at most :data:`PREIMPORT_MAX`
    -> their importable functions."""
    score = scores(tools, question)
    relevant = [t for t in listed(tools, question, limit) if score[t.name] > 0 and importable(t)]
    relevant.sort(key=lambda t: (score[t.name], t.updated_at), reverse=True)
    return {t.name: importable(t) for t in relevant[:PREIMPORT_MAX]}


def tools_section(
    tools: Sequence[ToolInfo],
    question: str,
    limit: int,
    harvest: bool = False,
    imported: Collection[str] = (),
) -> str:
    """The system prompt's lines about saved tools (name, signature, one line each) and how tools are made:
    ``save_tool``, or with ``harvest`` (service.harvest_tools) that the run's functions are saved after it.
    A tool named in ``imported`` was imported into the session before the run: its line says to call it."""
    shown = listed(tools, question, limit)
    lines = []
    if shown:
        more = f"; {len(tools) - len(shown)} more: tools.available()" if len(tools) > len(shown) else ""
        lines.append(
            "Saved tools, already tested. When one does what is asked, import it and call it instead of "
            f"writing that code again{more}:"
        )
        for tool in shown:
            about = tool.description.strip().split("\n")[0][:150]
            if tool.name in imported:
                funcs = [f for f in tool.functions if f.name in importable(tool)]
                sigs = "; ".join(f"{f.name}{f.signature}" for f in funcs[:3])
                lines.append(
                    f"- {sigs}" + (f": {about}" if about else "") + f" (already imported in this session "
                    f"from tools.{tool.name}: call it directly; do not write it again)"
                )
                continue
            names = ", ".join(f.name for f in tool.functions)
            sigs = "; ".join(f"{f.name}{f.signature}" for f in tool.functions[:3])
            lines.append(f"- from tools.{tool.name} import {names}: {sigs}" + (f". {about}" if about else ""))
    lines.append(HARVEST_HINT if harvest else SAVE_HINT)
    return "\n".join(lines)


async def from_run(store: ToolStore, owner: Principal, result: ExecutionResult) -> str:
    """Save the tools that the step's code asked for with ``save_tool``; what to tell the model ('' when
    it asked for none)."""
    requests = [d.mime[MIME] for d in result.display if MIME in d.mime][:MAX_REQUESTS_PER_STEP]
    notes = []
    for raw in requests:
        try:
            body = json.loads(raw)
            name = str(body.get("name", ""))
            spec = check(
                name,
                str(body.get("description", "")),
                str(body.get("source", "")),
                str(body.get("tests", "")),
                [str(p) for p in body.get("packages", [])],
                (),
                bool(body.get("private", False)),
            )
            info = await store.save(owner, spec)
        except ToolRefused as exc:
            notes.append(f"save_tool: NOT saved: {describe(exc)}\nFix it, then call save_tool again.")
        except ApiError as exc:
            notes.append(f"save_tool: NOT saved: {exc.message}")
        except (ValueError, AttributeError, TypeError) as exc:
            notes.append(
                f"save_tool: the request could not be read ({exc}); call save_tool(function, tests=...)"
            )
        else:
            names = ", ".join(f.name for f in info.functions)
            notes.append(
                f"save_tool: tool {info.name!r} saved as version {info.version} ({info.tests_passed} tests "
                f"passed in a fresh session); any session can now use: from tools.{info.name} import {names}"
            )
    return "\n".join(notes)
