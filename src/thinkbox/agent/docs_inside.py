"""The live-documentation helper, run inside the session (see session_helpers): stdlib only.

``main({"targets": [{"expr": ..., "missing": ...}], "chars": N}, user_ns)`` evaluates each ``expr`` (a
chain of names, attributes and constant subscripts, checked by the host) in the user's namespace and
returns what the model should read: for ``keys`` (a KeyError), the keys the object has; for ``missing``
(an AttributeError), the type and the closest
attribute names with the first one's documentation; else the object's signature and docstring's start
(of a builtin such as ``print`` only when the error named it).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

DOC_LINES = 4


def main(args: dict[str, Any], ns: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for target in args["targets"][:3]:
        try:
            obj = eval(target["expr"], ns)
        except Exception:
            continue
        missing = target.get("missing")
        if target.get("keys"):
            out.append(_keys(target["expr"], obj))
        elif missing:
            out.append(_attribute(target["expr"], obj, str(missing)))
        elif getattr(obj, "__module__", None) != "builtins" or target.get("named"):
            out.append(describe(obj, target["expr"]))  # print, len: not what failed in a library
    text = "\n".join(t for t in out if t)
    return [text[: int(args.get("chars", 1200))]]


def _keys(expr: str, obj: Any) -> str:
    keys = getattr(obj, "keys", None)
    if not callable(keys):
        return ""
    names = [repr(k)[:60] for k in list(keys())[:40]]
    return f"{expr} ({type(obj).__name__}) has the keys: {', '.join(names)}"


def _attribute(expr: str, obj: Any, missing: str) -> str:
    names = [n for n in dir(obj) if not n.startswith("_")]
    close = difflib.get_close_matches(missing, names, n=4, cutoff=0.5)
    kind = type(obj).__name__ if not inspect.ismodule(obj) else f"module {obj.__name__}"
    if not close:
        shown = ", ".join(names[:30])
        return f"{expr} ({kind}) has no attribute {missing!r}. Its attributes include: {shown}"
    text = f"{expr} ({kind}) has no attribute {missing!r}; close names: {', '.join(close)}"
    try:
        first = describe(getattr(obj, close[0]), f"{expr}.{close[0]}")
    except Exception:
        first = ""
    return text + ("\n" + first if first else "")


def describe(obj: Any, expr: str) -> str:
    """``expr(signature)`` and the docstring's first lines."""
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = ""
    doc = inspect.getdoc(obj) or ""
    lines = [line for line in doc.strip().splitlines()[: DOC_LINES * 2] if line.strip()][:DOC_LINES]
    head = f"{expr}{signature}" if signature else expr
    if len(head) > 600:
        head = head[:597] + "..."
    return head + "".join(f"\n    {line[:200]}" for line in lines)
