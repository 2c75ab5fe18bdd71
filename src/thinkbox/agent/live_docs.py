"""Live documentation: after a TypeError or AttributeError, the model reads the real signature.

Small models call library functions from memory: a keyword that does not exist, a method of another
class. The installed library knows better. When a step fails with one of these errors, the host finds the
object involved on the failing line of the step's code (the function the TypeError names, or the object
an AttributeError's missing attribute was looked up on) and the session reads its signature and the
start of its docstring with ``inspect`` (:mod:`thinkbox.agent.docs_inside`), or the closest attribute
names; after a KeyError, the keys the record or frame really has (JSON fields guessed from memory are
the usual cause). Only plain chains (``pd.read_csv``, ``df.groupby``, ``df["a"].str``) are looked up, so
nothing the model wrote is called; the text is bounded, and a lookup that fails adds nothing.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from thinkbox.agent import docs_inside
from thinkbox.agent.session_helpers import run_helper
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import ExecutionResult

ERRORS = ("TypeError", "AttributeError", "KeyError")
MAX_CHARS = 1200
TIMEOUT_S = 5.0
_CELL_LINE = re.compile(r'File "<cell-\d+>", line (\d+)')
_NAMED_CALL = re.compile(r"([A-Za-z_][\w.]*)\(\)")
_MISSING = re.compile(r"has no attribute '(\w+)'")


def targets(code: str, result: ExecutionResult) -> list[dict[str, Any]]:
    """What to look up for ``result``'s error in ``code``: ``{"expr": ..., "missing": ...}`` dicts."""
    error = result.error
    if error is None or error.type not in ERRORS:
        return []
    lines = _CELL_LINE.findall(error.traceback)
    if not lines:
        return []
    nodes = _nodes_on_line(code, int(lines[-1]))
    if error.type == "KeyError":  # a record's or a frame's key spelt from memory: show the real ones
        found = [n.value for n in nodes if isinstance(n, ast.Subscript) and _key(n) == error.message]
        return [{"expr": e, "keys": True} for e in _chains(found)][:1]
    if error.type == "AttributeError":
        missing = _MISSING.search(error.message)
        if missing is None:
            return []
        found = [n.value for n in nodes if isinstance(n, ast.Attribute) and n.attr == missing.group(1)]
        return [{"expr": e, "missing": missing.group(1)} for e in _chains(found)][:1]
    calls = [n.func for n in nodes if isinstance(n, ast.Call)]
    named = _NAMED_CALL.search(error.message)
    last = named.group(1).rsplit(".", 1)[-1] if named is not None else ""
    if matching := [f for f in calls if _last_name(f) == last]:
        return [{"expr": e, "named": True} for e in _chains(matching)][:2]
    if not _raised_in_library(error.traceback):
        return []  # a TypeError of the step's own code (1 + "a"): no library call to document
    return [{"expr": e} for e in _chains(calls)][:2]  # raised inside a call on the line


def _key(node: ast.Subscript) -> str | None:
    return repr(node.slice.value) if isinstance(node.slice, ast.Constant) else None


def _nodes_on_line(code: str, lineno: int) -> list[ast.AST]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if getattr(n, "lineno", None) == lineno]


def _last_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _chains(nodes: list[ast.expr]) -> list[str]:
    """The nodes that are plain chains (names, attributes, constant subscripts), as source, no repeats."""
    out: list[str] = []
    for node in nodes:
        if _plain(node) and (text := ast.unparse(node)) not in out:
            out.append(text)
    return out


def _plain(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.Attribute):
        return _plain(node.value)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and _plain(node.value)
    return False


def _raised_in_library(traceback: str) -> bool:
    """Whether the traceback goes on past the step's last frame (the error came from inside a call)."""
    frames = re.findall(r'File "([^"]+)"', traceback)
    return bool(frames) and not frames[-1].startswith("<cell-")


async def lookup(session: Session, code: str, result: ExecutionResult) -> str:
    """The documentation for ``result``'s error, read in ``session`` ('' when there is none)."""
    found = targets(code, result)
    if not found:
        return ""
    args = {"targets": found, "chars": MAX_CHARS}
    reply = await run_helper(session, docs_inside, args, timeout=TIMEOUT_S)
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], str) or not reply[0].strip():
        return ""
    return "Documentation, read in the session:\n" + reply[0].strip()[:MAX_CHARS]
