"""Lint before running: Python with a syntax error or an undefined name goes back to the model unrun.

Small models often use a name they never defined (``price``), forget an import, or squeeze a function onto
one line. Running such code costs a sandbox round trip and, worse, a half-run cell whose side effects stay.
pyflakes (as a library, in-process, on the host) finds both kinds before anything runs. Names the session
already defines (earlier steps, earlier runs of a chat) count as defined: they come from the session's
``variables`` request, which runs no user code. Only these two kinds of problems are reported: unused
imports and the like are no reason to refuse code.

Without pyflakes the check is skipped (the loop says so once, with a ``Notice``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox.session import Session

try:
    from pyflakes import checker as _checker
    from pyflakes import messages as _messages
except ImportError:  # an optional check: the loop runs without it
    _checker = _messages = None  # type: ignore[assignment]

AVAILABLE = _checker is not None
UNAVAILABLE_NOTE = "pyflakes is not installed, so code is run without the lint check (pip install pyflakes)."
KERNEL_NAMES = frozenset({"display", "_thinkbox_shell", "In", "Out", "get_ipython", "_"})
"""Names the sandbox's Python kernel defines in every session (inside/kernel.py), not in ``variables``."""
MAX_PROBLEMS = 5
_SHELL_LINE = re.compile(r"^([ \t]*)!(?!=).*$", re.MULTILINE)


def problems(code: str, known: Iterable[str] = ()) -> list[str]:
    """Syntax errors and undefined names in ``code``, one line each ('' list: nothing found).

    ``known``: names defined outside the code (the session's). Names starting with ``_`` are never
    reported (the session's listing leaves them out); nor are ``!cmd`` shell lines (the kernel runs them)."""
    if _checker is None or _messages is None:
        return []
    source = _SHELL_LINE.sub(r"\1pass", code)  # the kernel turns these into calls; the line count stays
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [_syntax(exc, code)]
    found = _checker.Checker(tree, filename="<step>", builtins=set(known) | KERNEL_NAMES)
    out: dict[str, str] = {}  # each name once, where it is first used
    for message in sorted(found.messages, key=lambda m: (m.lineno, m.col)):
        if isinstance(message, _messages.UndefinedName) and not message.message_args[0].startswith("_"):
            name = message.message_args[0]
            out.setdefault(name, f"line {message.lineno}: undefined name {name!r}")
    return list(out.values())[:MAX_PROBLEMS]


def _syntax(exc: SyntaxError, code: str) -> str:
    where = f"line {exc.lineno}: " if exc.lineno else ""
    text = f"{where}SyntaxError: {exc.msg}"
    lines = code.splitlines()
    if exc.lineno and 0 < exc.lineno <= len(lines):
        shown = lines[exc.lineno - 1]
        text += f"\n    {shown[:200]}"
        if exc.offset and 0 < exc.offset <= min(len(shown), 200):
            text += "\n    " + " " * (exc.offset - 1) + "^"
    return text


async def session_names(session: Session) -> set[str] | None:
    """The names the session defines; None when they cannot be known in full (then only syntax is
    checked: flagging a name that exists would refuse good code)."""
    try:
        found = await session.variables()
    except (ThinkboxError, OSError):
        return None
    if found.omitted:
        return None
    return {v.name for v in found.variables}


async def check(session: Session, code: str) -> list[str]:
    """:func:`problems` of ``code`` given what ``session`` defines."""
    if _checker is None:
        return []
    known = await session_names(session)
    if known is None:
        return [p for p in problems(code) if "SyntaxError" in p]
    return problems(code, known)


def observation(found: list[str]) -> str:
    """What the model is told instead of an output."""
    listed = "\n".join(found)
    return (
        f"Output:\nThe code was not run: checking it found\n{listed}\n"
        "Fix this (define or import what is missing; one statement per line) and send the whole corrected "
        "code with debug_error."
    )
