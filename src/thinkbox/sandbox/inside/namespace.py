"""What the session's namespace holds, for the ``variables`` request (docs/protocol.md): names, types and
short descriptions, made without running the user's code.

A description never calls a method the user's code could define (``__repr__``, ``__len__``, properties):
values of built-in types are shown from their contents, numpy arrays and pandas frames from their shape
and dtypes, anything else by its type alone. So listing the namespace cannot change the session's state,
print anything, or hang on a user object's ``__repr__``. Stdlib only.
"""

from __future__ import annotations

import sys
import types
from typing import Any

MAX_VARIABLES = 500
REPR_CHARS = 120
_ITEMS = 6  # elements shown of a list, tuple, set or dict
_SCALARS = (bool, int, float, complex, type(None))
_HIDDEN = {"In", "Out", "exit", "quit", "get_ipython"}


def describe(ns: dict[str, Any], hidden: set[int]) -> dict[str, Any]:
    """The user's names in ``ns`` (sorted; ``_private`` names and objects whose ``id`` is in ``hidden``
    left out), at most :data:`MAX_VARIABLES` of them."""
    names = sorted(
        n
        for n, v in ns.items()
        if type(n) is str and not n.startswith("_") and n not in _HIDDEN and id(v) not in hidden
    )
    out = [
        {"name": _cap(name), "type": _cap(type_name(ns[name])), "repr": short(ns[name])}
        for name in names[:MAX_VARIABLES]
    ]
    return {"variables": out, "omitted": max(0, len(names) - MAX_VARIABLES)}


def type_name(value: Any) -> str:
    kind = type(value)
    module = type.__dict__["__module__"].__get__(kind)
    name = type.__dict__["__qualname__"].__get__(kind)
    return str(name) if module in ("builtins", "__main__") else f"{module}.{name}"


def _cap(text: str) -> str:
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


def short(value: Any) -> str:
    text = _describe(value, depth=0)
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


def _describe(value: Any, depth: int) -> str:
    kind = type(value)
    if kind in _SCALARS:
        return _scalar(value)
    if kind is str:
        return repr(value[:REPR_CHARS]) + ("..." if len(value) > REPR_CHARS else "")
    if kind in (bytes, bytearray):
        return f"{len(value):,} bytes"
    if kind in (list, tuple, set, frozenset):
        if depth > 1:
            return f"{kind.__name__} of {len(value)}"
        items = list(value)[:_ITEMS] if kind not in (set, frozenset) else _first(value)
        inner = ", ".join(_describe(v, depth + 1) for v in items)
        more = ", ..." if len(value) > _ITEMS else ""
        brackets = "[]" if kind is list else "()" if kind is tuple else "{}"
        return f"{brackets[0]}{inner}{more}{brackets[1]}"
    if kind is dict:
        if depth > 1:
            return f"dict of {len(value)}"
        pairs = [
            f"{_describe(k, depth + 1)}: {_describe(v, depth + 1)}" for k, v in list(value.items())[:_ITEMS]
        ]
        return "{" + ", ".join(pairs) + (", ..." if len(value) > _ITEMS else "") + "}"
    if kind is types.ModuleType:
        return f"module {value.__name__}"
    if kind in (types.FunctionType, types.BuiltinFunctionType):
        return f"function {value.__qualname__}"
    if isinstance(value, type):
        return f"class {type.__dict__['__qualname__'].__get__(value)}"
    return _library(value, kind) or type_name(value)


def _scalar(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past the str conversion limit
        return f"int of {value.bit_length():,} bits"


def _first(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) == _ITEMS:
            break
        out.append(item)
    return out


def _library(value: Any, kind: type) -> str | None:
    """numpy arrays and pandas frames, by their shape (only of the exact library types)."""
    np = sys.modules.get("numpy")
    if np is not None and kind is np.ndarray:
        shape = "x".join(str(n) for n in value.shape) or "scalar"
        return f"array {shape} {value.dtype}"
    pd = sys.modules.get("pandas")
    if pd is not None and kind is pd.DataFrame:
        rows, cols = value.shape
        names = ", ".join(str(c) for c in list(value.columns)[:_ITEMS])
        return f"DataFrame {rows:,} rows x {cols} columns: {names}" + (", ..." if cols > _ITEMS else "")
    if pd is not None and kind is pd.Series:
        return f"Series {len(value):,} values {value.dtype}"
    return None
