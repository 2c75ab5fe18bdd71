"""What a tool is, and the checks made before its tests run: its name, that its source parses and defines
functions, that it has tests; its functions' signatures and docstrings, read from the source (``ast``).

Whether the module imports, and whether its tests pass, is decided in a sandbox (:mod:`.runner`), never by
importing anything on the host.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
import sys
from dataclasses import dataclass, field

MAX_SOURCE_CHARS = 200_000
MAX_DESCRIPTION_CHARS = 2_000
PRELOADED = ("numpy", "pandas", "matplotlib", "openpyxl", "networkx", "sympy", "scipy", "tools")
"""Installed packages (and the tools package itself) that a tool's name must not be confused with."""
_SECRET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ToolRefused(Exception):
    """The tool cannot be saved: ``code`` (invalid_tool, tool_import_failed, tool_tests_failed), what to fix,
    and the failures of its tests when they ran."""

    def __init__(self, code: str, message: str, failures: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.failures = code, message, failures or []


@dataclass(frozen=True)
class Function:
    name: str
    signature: str
    doc: str

    def line(self) -> str:
        """``name(args) -> result``: the first line of its docstring."""
        first = self.doc.strip().split("\n")[0] if self.doc.strip() else ""
        return f"{self.name}{self.signature}" + (f": {first}" if first else "")


@dataclass(frozen=True)
class ToolSpec:
    """A tool as submitted, checked: its module's source and tests, and what was read from them."""

    name: str
    description: str
    source: str
    tests: str
    packages: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    private: bool = False
    functions: tuple[Function, ...] = field(default=())
    test_names: tuple[str, ...] = field(default=())
    doctests: int = 0


def check_name(name: str) -> str:
    """``name`` when it can be a tool's module name; :class:`ToolRefused` saying why not."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise ToolRefused(
            "invalid_tool",
            f"tool name {name!r} is not a Python identifier: use letters, digits and _ (e.g. parse_dates)",
        )
    if name.startswith("_") or len(name) > 64:
        raise ToolRefused(
            "invalid_tool", f"tool name {name!r} must not start with _ and has at most 64 characters"
        )
    if name in sys.stdlib_module_names or name in PRELOADED:
        raise ToolRefused(
            "invalid_tool",
            f"tool name {name!r} is the name of a standard or installed module and would be confused with "
            f"it; choose another (e.g. {name}_tools)",
        )
    if name in _package_names():
        raise ToolRefused(
            "invalid_tool",
            f"tool name {name!r} is taken by the tools package itself (tools.{name}); choose another",
        )
    return name


@functools.cache
def _package_names() -> frozenset[str]:
    """What ``tools`` itself defines (save_tool, available...): a tool module of that name would hide it."""
    from thinkbox.service.tools import inside

    return frozenset(n for n in vars(inside) if not n.startswith("_"))


def check(
    name: str,
    description: str,
    source: str,
    tests: str,
    packages: list[str] | tuple[str, ...] = (),
    secrets: list[str] | tuple[str, ...] = (),
    private: bool = False,
) -> ToolSpec:
    """The checked :class:`ToolSpec`; :class:`ToolRefused` naming what to fix."""
    check_name(name)
    for what, text, limit in (
        ("source", source, MAX_SOURCE_CHARS),
        ("tests", tests, MAX_SOURCE_CHARS),
        ("description", description, MAX_DESCRIPTION_CHARS),
    ):
        if len(text) > limit:
            raise ToolRefused("invalid_tool", f"the {what} has {len(text):,} characters; at most {limit:,}")
        if "\x00" in text:
            raise ToolRefused("invalid_tool", f"the {what} contains a NUL character; remove it")
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ToolRefused(
                "invalid_tool",
                f"the {what} holds a character that is not valid Unicode ({exc.reason}); remove it",
            ) from None
    module = _parse(source, "source")
    functions = tuple(_functions(module))
    if not functions:
        raise ToolRefused(
            "invalid_tool",
            "the source defines no function: a tool is a module with at least one top-level function "
            "whose name does not start with _",
        )
    test_module = _parse(tests, "tests")
    test_names = tuple(
        n.name
        for n in test_module.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
    )
    doctests = source.count(">>>") + tests.count(">>>")
    if not test_names and not doctests:
        raise ToolRefused(
            "invalid_tool",
            "the tool has no tests: give test functions in tests (def test_...(): assert ...) or >>> "
            "examples in a docstring; a tool is kept only when its tests pass",
        )
    for package in packages:
        if not _PACKAGE.fullmatch(package):
            raise ToolRefused("invalid_tool", f"package {package!r} is not a package name")
    for secret in secrets:
        if not _SECRET.fullmatch(secret):
            raise ToolRefused("invalid_tool", f"secret name {secret!r} is not an identifier")
    return ToolSpec(
        name=name,
        description=description.strip()
        or (functions[0].doc.strip().split("\n")[0] if functions[0].doc else ""),
        source=source,
        tests=tests,
        packages=tuple(packages),
        secrets=tuple(secrets),
        private=private,
        functions=functions,
        test_names=test_names,
        doctests=doctests,
    )


def _parse(text: str, what: str) -> ast.Module:
    try:
        return ast.parse(text, filename=what)
    except SyntaxError as exc:
        raise ToolRefused(
            "invalid_tool",
            f"the {what} does not parse: {exc.msg} at line {exc.lineno}: {exc.text or ''}".strip(),
        ) from None
    except ValueError as exc:
        raise ToolRefused("invalid_tool", f"the {what} does not parse: {exc}") from None


def _functions(module: ast.Module) -> list[Function]:
    out = []
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            signature = f"({ast.unparse(node.args)})"
            if node.returns is not None:
                signature += f" -> {ast.unparse(node.returns)}"
            out.append(Function(node.name, signature, ast.get_docstring(node) or ""))
    return out
