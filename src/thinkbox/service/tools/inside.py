"""The tenant's ``tools`` package inside a sandbox session (this file is its ``__init__.py``).

Standard library only: it runs in the sandbox, where nothing of thinkbox is importable. The service mounts
the tenant's active tools read-only at ``/workspace/.tools/tools/`` (on ``sys.path`` through the session's
``PYTHONPATH``) and the user's private ones at ``/workspace/.tools-mine/tools/``, added to this package's
path here. :func:`save_tool` asks the service to save a function as a tool: it sends the request as a
display item of the MIME type :data:`MIME`, which the service reads from the step's result, tests in a
fresh session and answers in the step's observation (``thinkbox.service.tools.from_run``).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

MIME = "application/vnd.thinkbox.save-tool+json"
PRIVATE = "/workspace/.tools-mine/tools"
_PATH: list[str] = globals().get("__path__", [])  # the package's path (none when imported as a module)
if os.path.isdir(PRIVATE) and PRIVATE not in _PATH:
    _PATH.append(PRIVATE)


def __getattr__(name: str) -> types.ModuleType:
    """``import tools; tools.NAME.function(...)``: a tool's module, imported on first use."""
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"no tool named {name!r} (see tools.available())") from None


def available() -> list[str]:
    """The names of the tools this session can import."""
    names: set[str] = set()
    for folder in _PATH:
        if os.path.isdir(folder):
            names.update(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_"))
    return sorted(names)


class _Request:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def _repr_mimebundle_(self) -> dict[str, str]:
        return {MIME: json.dumps(self.body)}

    def __repr__(self) -> str:
        return f"<save_tool request for {self.body['name']!r}>"


def save_tool(
    functions: Callable[..., Any] | Sequence[Callable[..., Any]],
    tests: str | Callable[..., Any] | Sequence[Callable[..., Any]] = "",
    description: str = "",
    name: str = "",
    packages: Sequence[str] = (),
    private: bool = False,
) -> None:
    """Save functions you defined and tested as a tool that later runs can import.

    ``tests``: code with ``def test_...():`` functions that assert, or the test functions themselves
    (doctest ``>>>`` examples in the docstrings count too). ``name``: the module's name (default: the
    first function's). The service runs the tests in a fresh session and says in this step's output
    whether the tool was saved; then ``from tools.NAME import FUNCTION`` works in every session.
    """
    fns = [functions] if callable(functions) else list(functions)
    if not fns or not all(inspect.isfunction(f) for f in fns):
        raise TypeError("save_tool(functions, ...) takes a function you defined, or a list of them")
    source = _module_source(fns)
    if not isinstance(tests, str):
        test_fns = [tests] if callable(tests) else list(tests)
        tests = "\n\n".join(inspect.getsource(f) for f in test_fns)
    first = fns[0]
    body = {
        "name": name or first.__name__,
        "description": description or (inspect.getdoc(first) or "").split("\n")[0],
        "source": source,
        "tests": tests,
        "packages": list(packages),
        "private": bool(private),
    }
    display = first.__globals__.get("display") or getattr(builtins, "display", None)
    if not callable(display):
        raise RuntimeError("save_tool works only in a thinkbox session")
    display(_Request(body))
    print(f"save_tool: {body['name']!r} sent; the service tests it in a fresh session (see below)")


def _module_source(fns: list[Callable[..., Any]]) -> str:
    """The functions' sources, after the imports and helper functions of the session that they use."""
    imports: list[str] = []
    helpers: list[str] = []
    chosen = {f.__name__ for f in fns}
    todo = list(fns)
    while todo:
        fn = todo.pop()
        for ref in _global_names(fn.__code__):
            value = fn.__globals__.get(ref)
            if isinstance(value, types.ModuleType):
                line = _import_line(ref, value)
                if line not in imports:
                    imports.append(line)
            elif inspect.isfunction(value) and ref not in chosen and value.__module__ == fn.__module__:
                chosen.add(ref)
                helpers.append(inspect.getsource(value))
                todo.append(value)
    parts = ["\n".join(sorted(imports))] if imports else []
    parts += helpers + [inspect.getsource(f) for f in fns]
    return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _import_line(alias: str, module: types.ModuleType) -> str:
    name = module.__name__
    if name == alias:
        return f"import {name}"
    if "." in name and name.rsplit(".", 1)[1] == alias:
        return f"from {name.rsplit('.', 1)[0]} import {alias}"
    return f"import {name} as {alias}"
