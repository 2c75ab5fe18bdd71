"""A tool's tests, run in a fresh sandbox session that sees the tenant's tools and the candidate module.

The candidate is written to a folder of its own, mounted read-only at ``/workspace/.tools-new/tools`` and
put first on the ``tools`` package's path, so ``from tools.NAME import f`` in the tests finds it (and the
other tools of the tenant, as a session would). Test functions run as ``unittest.FunctionTestCase``s,
``>>>`` examples of the module's docstrings and of the tests as doctests (both standard library); the
report is read back by a second cell. The first cell has ``tool_test_timeout_s``: tests that run forever
are stopped and the tool refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.types import Mount, SessionConfig
from thinkbox.service.tools.spec import ToolRefused, ToolSpec

NEW = "/workspace/.tools-new"
MAX_FAILURES = 10
MAX_TRACE_CHARS = 2_000

_RUN = """\
import doctest as _doctest, importlib as _importlib, json as _json, linecache as _linecache
import traceback as _traceback, unittest as _unittest
import tools as _tools

_tools.__path__.insert(0, {new!r})
_report = {{"import_error": None, "failures": [], "ran": 0}}
try:
    _module = _importlib.import_module("tools." + {name!r})
except BaseException:
    _report["import_error"] = _traceback.format_exc()
else:
    _suite = _unittest.TestSuite()
    _lines = {tests!r}
    _linecache.cache["<tests>"] = (len(_lines), None, _lines.splitlines(True), "<tests>")
    _ns = {{**vars(_module), "__name__": "tool_tests"}}  # the module's names in scope, as in doctests
    try:
        exec(compile(_lines, "<tests>", "exec"), _ns)
    except BaseException:
        _report["failures"].append({{"test": "<tests>", "error": _traceback.format_exc()}})
    else:
        for _n in {test_names!r}:
            _suite.addTest(_unittest.FunctionTestCase(_ns[_n]))
        _suite.addTests(_doctest.DocTestSuite(_module))
        if ">>>" in _lines:
            _case = _doctest.DocTestParser().get_doctest(_lines, dict(vars(_module)), "tests", "<tests>", 0)
            _suite.addTest(_doctest.DocTestCase(_case))
        _result = _unittest.TestResult()
        _suite.run(_result)
        _report["ran"] = _result.testsRun
        for _test, _trace in (_result.failures + _result.errors)[:{max_failures}]:
            _report["failures"].append({{"test": _test.id(), "error": _trace[-{max_trace}:]}})
        _report["failed"] = len(_result.failures) + len(_result.errors)
"""


async def run_tests(
    backend: SandboxBackend,
    spec: ToolSpec,
    *,
    staging: Path,
    mounts: tuple[Mount, ...],
    base: SessionConfig,
    timeout_s: float,
    prepare: Callable[[SessionConfig], Awaitable[SessionConfig]] | None = None,
) -> int:
    """Run the tool's tests in a fresh session; the number of tests that ran and passed.

    :class:`ToolRefused` when its module does not import, a test fails or the tests outlast ``timeout_s``.
    ``mounts``: the tenant's tools (what sessions see), ``staging`` a folder for the candidate, ``prepare``
    what else the session gets (the service: the user's egress proxy, installed packages and secrets'
    placeholders)."""
    folder = await asyncio.to_thread(_stage, staging, spec)
    try:
        limits = base.limits.model_copy(update={"timeout_s": timeout_s})
        config = SessionConfig(
            limits=limits,
            mounts=(*mounts, Mount(source=folder, target=NEW, read_only=True)),
            env={"PYTHONPATH": "/workspace/.tools"},
        )
        if prepare is not None:  # the saving user's way out and packages, as in their own sessions
            config = await prepare(config)
        session = await backend.create_session(config)
        try:
            code = _RUN.format(
                new=f"{NEW}/tools",
                name=spec.name,
                tests=spec.tests,
                test_names=spec.test_names,
                max_failures=MAX_FAILURES,
                max_trace=MAX_TRACE_CHARS,
            )
            ran = await session.execute(code, timeout=timeout_s)
            if ran.timed_out:
                raise ToolRefused(
                    "tool_tests_failed",
                    f"the tests of {spec.name!r} ran longer than {timeout_s:g} s and were stopped "
                    "(service.tool_test_timeout_s): a loop that never ends, or too much work for a test?",
                    [{"test": "<all>", "error": ran.error.message if ran.error else "timed out"}],
                )
            if ran.error is not None:  # the interpreter died (os._exit, memory), or the harness failed
                raise ToolRefused(
                    "tool_tests_failed",
                    f"the tests of {spec.name!r} could not finish: {ran.error.type}: {ran.error.message}",
                    [{"test": "<all>", "error": _cut(ran.error.traceback or ran.error.message)}],
                )
            read = await session.execute("print(_json.dumps(_report))", timeout=10)
        finally:
            await session.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = _report(read.stdout, spec.name)
    if report["import_error"]:
        raise ToolRefused(
            "tool_import_failed",
            f"the module of {spec.name!r} does not import in a fresh session; fix the error below",
            [{"test": "import", "error": _cut(report["import_error"])}],
        )
    failures = [{"test": f["test"], "error": _cut(f["error"])} for f in report["failures"]]
    if failures:
        failed = max(int(report.get("failed", 0)), len(failures))
        names = ", ".join(f["test"] for f in failures)
        raise ToolRefused(
            "tool_tests_failed",
            f"{failed} of {max(report['ran'], failed)} tests of {spec.name!r} failed ({names}): fix the code "
            "or the tests",
            failures,
        )
    if not report["ran"]:
        raise ToolRefused("invalid_tool", f"no test of {spec.name!r} ran; add test functions or >>> examples")
    return int(report["ran"])


def _report(stdout: str, name: str) -> dict[str, Any]:
    """The harness's report (the last line it printed)."""
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict) or not isinstance(report.get("failures"), list):
        raise ToolRefused(
            "tool_tests_failed",
            f"the tests of {name!r} left no readable report (did the module or a test replace print or "
            "the names of the test harness?)",
            [{"test": "<harness>", "error": stdout[-MAX_TRACE_CHARS:]}],
        )
    return report


def _stage(staging: Path, spec: ToolSpec) -> Path:
    """A folder of ``staging`` holding ``tools/<name>.py``, readable by the session's own uid."""
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="tool-", dir=staging))
    os.chmod(folder, 0o755)
    package = folder / "tools"
    package.mkdir(mode=0o755)
    (package / f"{spec.name}.py").write_text(spec.source)
    os.chmod(package / f"{spec.name}.py", 0o644)
    return folder


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TRACE_CHARS else "...\n" + text[-MAX_TRACE_CHARS:]


def describe(exc: ToolRefused) -> str:
    """The refusal as text for a model or a terminal: the message, then each failure."""
    lines = [exc.message]
    for failure in exc.failures:
        lines.append(f"--- {failure['test']}\n{failure['error'].rstrip()}")
    return "\n".join(lines)


__all__ = ["describe", "run_tests"]
