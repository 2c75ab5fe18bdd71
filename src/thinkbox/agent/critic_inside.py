"""The critic's example runner, run inside the session (see session_helpers): stdlib only.

``main({"code": ..., "examples": [{"call": ..., "want": ..., "name": ...}], "chars": N}, user_ns)``
runs each example's ``call`` (an expression such as ``f([1, 2])``) and compares its value with ``want``
(the expected value as the question wrote it). The functions come from the answer's ``code`` when it has
any (it runs in a copy of the user's namespace, so the session's names stay as they were), else from the
session. Returns one dict per example: ``status`` pass, fail (``got``: the value's repr), error (``got``:
the exception) or missing (the function is defined nowhere).
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
from typing import Any


def main(args: dict[str, Any], ns: dict[str, Any]) -> list[dict[str, str]]:
    chars = int(args.get("chars", 200))
    space = dict(ns)
    code = str(args.get("code") or "")
    if code:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(code, "<answer>", "exec"), space)
        except BaseException:
            space = dict(ns)  # the answer's code does not run: judge the session's functions
    out = []
    for example in args["examples"]:
        out.append(_run(example, space, chars))
    return out


def _run(example: dict[str, str], space: dict[str, Any], chars: int) -> dict[str, str]:
    if not callable(space.get(example["name"])):
        return {"status": "missing", "got": ""}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            value = eval(example["call"], space)
    except Exception as exc:
        return {"status": "error", "got": f"{type(exc).__name__}: {exc}"[:chars]}
    if value is None and printed.getvalue().strip():  # a doctest of a call that prints
        shown = printed.getvalue().strip()
        ok = shown == example["want"].strip() or matches(_literal(shown, shown), example["want"])
        return {"status": "pass" if ok else "fail", "got": shown[:chars]}
    return {"status": "pass" if matches(value, example["want"]) else "fail", "got": repr(value)[:chars]}


def _literal(text: str, default: Any) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return default


_MISSING = object()


def matches(value: Any, want: str) -> bool:
    """Whether ``value`` is what ``want`` (as written in the question) says: the same repr or str, or the
    same Python literal, floats equal to 1e-6 (relative) and lists equal to tuples."""
    text = want.strip()
    if text in (repr(value), str(value)):
        return True
    expected = _literal(text, _MISSING)
    if isinstance(value, tuple) and len(value) == 1 and text.startswith("("):  # ("a") meant a 1-tuple
        value = value[0]
    return expected is not _MISSING and _same(value, expected)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False
