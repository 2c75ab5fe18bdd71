"""Code the loop runs in the user's session for its own purposes: file previews, documentation lookups.

A helper is a module whose source defines ``main(args, user_ns)``, returning plain data. It runs as one
Python cell in a namespace of its own (it defines nothing in the user's namespace and leaves ``_`` as it
was) and prints its result as JSON after a marker. Running it inside the session means it sees the user's
files and objects as the model's code does, and a hostile file can only hurt the sandbox. Anything that
goes wrong (a timeout, an exception, a killed interpreter, unreadable output) gives None: helpers only add
to what the model is told and never fail a step.
"""

from __future__ import annotations

import inspect
import json
from types import ModuleType
from typing import Any

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox.session import Session

MARKER = "\x1ethinkbox-helper\x1e"
_CALL = (
    "\nimport json as _json\n"
    "print({marker!r} + _json.dumps(main(_json.loads(_thinkbox_args), _thinkbox_user), default=str))\n"
)


def helper_cell(module: ModuleType, args: Any) -> str:
    """One cell that runs ``module``'s ``main(args, globals())`` in a namespace of its own."""
    source = inspect.getsource(module) + _CALL.format(marker=MARKER)
    names = f"'_thinkbox_args': {json.dumps(args)!r}, '_thinkbox_user': globals()"
    return f"exec({source!r}, {{'__name__': '_thinkbox_helper', {names}}})"


async def run_helper(session: Session, module: ModuleType, args: Any, *, timeout: float) -> Any | None:
    """``module``'s result, run in ``session``; None when anything went wrong (see the module docstring).
    A helper that killed the interpreter leaves a fresh one behind, so the run can go on."""
    try:
        result = await session.execute(helper_cell(module, args), timeout=timeout, language="py")
        if result.killed:
            await session.restart()
            return None
    except ThinkboxError:
        return None
    _, found, tail = result.stdout.rpartition(MARKER)
    if not result.ok or not found:
        return None
    try:
        return json.loads(tail)
    except ValueError:
        return None
