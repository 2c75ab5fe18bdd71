"""Tools from a run: after a run of the service answers, the functions its code defined and called are saved
as the tenant's tools, without the model having to call ``save_tool`` (``service.harvest_tools``).

The rule is mechanical, not a model's decision: no extra model call (the embedded model would spend tens
of seconds on it and, asked to save, did not), the same outcome for the same run, and the store's own
check decides what is kept. Step by step:

1. The cells: the Python code of the run's steps that ran without an error (``CodeStarted`` paired with
   an ``ExecutionFinished`` that is ``ok``), read from the run's events, never ``inspect.getsource`` (the
   text of exec'd code is not reliably there).
2. The candidates: top-level functions of those cells (the last definition of a name wins) that take
   arguments, have a name of 3 or more characters that does not start with ``_`` or ``test``, and are
   called somewhere in the cells (a test function's ``assert f(2) == 4`` counts). A candidate that another
   candidate uses is saved inside that one's module, not on its own. At most :data:`MAX_TOOLS` per run.
3. The module: the imports and literal constants (``RATE = 0.05``) of the cells that the function uses,
   the function, then the run's functions it calls (transitively).
4. The tests: up to :data:`MAX_TESTS` calls of the function with literal arguments found in the cells
   (``f('2026-03-02', 5)``), evaluated once more in the run's own session (still open: the values are
   the ones the run computed) and written as ``assert f(...) == value`` when the value is a literal that
   reads back equal (a numpy scalar as its Python value; floats compare with ``math.isclose``). A call
   whose value is not such a literal is left out; a function left with none is ``untested``, not saved.
5. Saving goes through :meth:`.store.ToolStore.save`: the tests run in a fresh session, where the module
   must import and pass on its own (a function that read a session variable or a workspace file fails
   there and is ``refused``). A tool of the same name with the same source is ``unchanged``; one with
   another source ``exists`` and is not replaced (``save_tool`` or ``POST /v1/tools`` make new versions:
   a harvest never overwrites a tool someone chose to save); a name the tools package or a standard
   module owns is refused (:func:`.spec.check_name`).

What it shares: a harvested tool is tenant-wide, so its code and the arguments of its tests (values from
the run) are visible to the tenant's other users; a text holding one of the user's secrets is never saved.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from thinkbox.agent.events import CodeStarted, Event, ExecutionFinished, HarvestedTool, ToolsHarvested
from thinkbox.agent.prompts import is_literal
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox.session import Session
from thinkbox.service.accounts import Principal
from thinkbox.service.errors import ApiError
from thinkbox.service.secrets.redact import Redactor
from thinkbox.service.tools.runner import describe
from thinkbox.service.tools.spec import ToolRefused, check
from thinkbox.service.tools.store import ToolInfo, ToolStore

log = logging.getLogger(__name__)
MAX_TOOLS = 3
MAX_TESTS = 3
MAX_VALUE_CHARS = 1_000
_HELPER = "_thinkbox_harvest_values"
# Run in the run's session: the value of each call, as a literal that reads back equal, or None.
_EVALUATE = f"""\
def {_HELPER}(calls):
    import ast, json
    out = []
    for call in calls:
        try:
            value = eval(call, globals())
            if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
                value = value.item()  # np.int64(35) -> 35, which the tool's result equals
            text = repr(value)
            same = len(text) <= {MAX_VALUE_CHARS} and ast.literal_eval(text) == value
        except Exception:
            same = False
        out.append(text if same else None)
    return json.dumps(out)


globals().pop({_HELPER!r})({{calls}})
"""


@dataclass
class Candidate:
    """A function of the run that may become a tool: its module's source and calls with literal args."""

    name: str
    doc: str
    source: str
    calls: list[str] = field(default_factory=list)
    uses: set[str] = field(default_factory=set)
    """The run's other functions that its module carries."""


@dataclass
class _Definitions:
    functions: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    calls: dict[str, list[str]] = field(default_factory=dict)
    called: set[str] = field(default_factory=set)


def candidates(cells: list[str]) -> list[Candidate]:
    """The functions of ``cells`` (code that ran without error, in order) worth saving (module docstring)."""
    defs = _Definitions()
    for cell in cells:
        try:
            tree = ast.parse(cell)
        except SyntaxError:
            continue
        _read(tree, cell, defs)
    found = {}
    for name, (node, _) in defs.functions.items():
        args = node.args
        takes = args.posonlyargs or args.args or args.kwonlyargs or args.vararg or args.kwarg
        if takes and len(name) >= 3 and not name.startswith(("_", "test")) and name in defs.called:
            found[name] = _candidate(name, defs)
    used = set().union(*(c.uses for c in found.values())) if found else set()
    kept = [c for c in found.values() if c.name not in used] or list(found.values())[:1]
    return kept[:MAX_TOOLS]


def _read(tree: ast.Module, cell: str, defs: _Definitions) -> None:
    lines = cell.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            defs.functions[node.name] = (node, "".join(lines[start - 1 : node.end_lineno]).rstrip() + "\n")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    continue
                bound = alias.asname or alias.name.split(".")[0]
                one = ast.Import(names=[alias]) if isinstance(node, ast.Import) else (
                    ast.ImportFrom(module=node.module, names=[alias], level=node.level)
                )  # fmt: skip
                defs.imports[bound] = ast.unparse(one)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and is_literal(node.value):
                defs.constants[targets[0].id] = ast.unparse(node)
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            name = call.func.id
            defs.called.add(name)
            args = [*call.args, *(k.value for k in call.keywords)]
            if all(k.arg is not None for k in call.keywords) and all(is_literal(a) for a in args):
                known = defs.calls.setdefault(name, [])
                text = ast.unparse(call)
                if text not in known:
                    known.append(text)


def _candidate(name: str, defs: _Definitions) -> Candidate:
    node, source = defs.functions[name]
    imports: list[str] = []
    constants: list[str] = []
    helpers: list[str] = []
    seen, todo = {name}, [node]
    while todo:
        for ref in sorted({n.id for n in ast.walk(todo.pop()) if isinstance(n, ast.Name)}):
            if ref in seen:
                continue
            seen.add(ref)
            if ref in defs.functions:
                helpers.append(ref)
                todo.append(defs.functions[ref][0])
            elif ref in defs.imports:
                imports.append(defs.imports[ref])
            elif ref in defs.constants:
                constants.append(defs.constants[ref])
    parts = ["\n".join(sorted(set(imports)))] if imports else []
    parts += ["\n".join(constants)] if constants else []
    parts += [source] + [defs.functions[h][1] for h in helpers]
    module = "\n\n\n".join(p.strip("\n") for p in parts) + "\n"
    doc = (ast.get_docstring(node) or "").strip().split("\n")[0]
    return Candidate(name, doc, module, defs.calls.get(name, [])[: MAX_TESTS * 3], set(helpers))


def build_tests(candidate: Candidate, values: dict[str, str]) -> tuple[str, int]:
    """The test module of ``candidate`` from the values its calls had (call text -> repr), and its count."""
    body: list[str] = []
    for call in candidate.calls:
        value = values.get(call)
        if value is None or len(body) == MAX_TESTS or len(value) > MAX_VALUE_CHARS:
            continue
        try:  # the session's answer is not trusted: only a literal becomes test code
            read = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(read, float):
            check_line = f"assert math.isclose({call}, {value}, rel_tol=1e-09, abs_tol=1e-12)"
        else:
            check_line = f"assert {call} == {value}"
        body.append(f"def test_{candidate.name}_{len(body) + 1}():\n    {check_line}\n")
    if not body:
        return "", 0
    head = "import math\n\n" if any("math.isclose" in b for b in body) else ""
    head += f"from tools.{candidate.name} import {candidate.name}\n"
    return head + "\n\n" + "\n\n".join(body), len(body)


class Harvest:
    """One run's harvest: :meth:`see` each event of the run, then :meth:`after_answer` once it answered."""

    def __init__(
        self,
        store: ToolStore,
        owner: Principal,
        session: Session,
        *,
        timeout_s: float,
        redactor: Redactor | None = None,
    ) -> None:
        self.store, self.owner, self.session = store, owner, session
        self.timeout_s, self.redactor = timeout_s, redactor
        self.cells: list[str] = []
        self._code: dict[int, str] = {}

    def see(self, event: Event) -> None:
        if isinstance(event, CodeStarted):
            if event.language == "py":
                self._code[event.step] = event.code
        elif isinstance(event, ExecutionFinished):
            code = self._code.pop(event.step, None)
            if code is not None and event.result.ok:
                self.cells.append(code)

    async def after_answer(self) -> ToolsHarvested | None:
        """Save what the run's cells hold (module docstring); the event saying what, None when nothing was
        defined and called. Never raises for a tool that cannot be saved: its outcome says why."""
        started = time.monotonic()
        found = candidates(self.cells)
        if not found:
            return None
        try:
            tools = await self._harvest(found)
        except ThinkboxError as exc:  # the session or the sandbox failed: the answer stands
            tools = [HarvestedTool(function=c.name, outcome="refused", reason=exc.message) for c in found]
        except Exception as exc:  # a fault of the harvest must not turn an answered run into a failed one
            log.exception("the harvest of %s failed", [c.name for c in found])
            why = f"the harvest failed: {type(exc).__name__}: {exc}"[:500]
            tools = [HarvestedTool(function=c.name, outcome="refused", reason=why) for c in found]
        return ToolsHarvested(tools=tools, duration_s=round(time.monotonic() - started, 3))

    async def _harvest(self, found: list[Candidate]) -> list[HarvestedTool]:
        existing = {t.name: t for t in await asyncio.to_thread(self.store.list_tools, self.owner)}
        values = await self._values([call for c in found for call in c.calls])
        out = []
        for candidate in found:
            tests, count = build_tests(candidate, values)
            outcome = self._outcome(candidate, tests, existing)
            if outcome is None:
                outcome = await self._save(candidate, tests, count)
            out.append(outcome)
        return out

    def _outcome(
        self, candidate: Candidate, tests: str, existing: dict[str, ToolInfo]
    ) -> HarvestedTool | None:
        """The outcome decided before any test runs; None: test and save it."""
        name = candidate.name
        tool = existing.get(name)
        if tool is not None:
            same = tool.source == candidate.source
            why = "" if same else "a tool of that name exists with other code; not replaced by a harvest"
            return HarvestedTool(function=name, outcome="unchanged" if same else "exists", reason=why)
        if not tests:
            return HarvestedTool(
                function=name,
                outcome="untested",
                reason="no call with literal arguments whose value reads back as a literal",
            )
        if self.redactor and self.redactor.found(candidate.source + tests):
            return HarvestedTool(function=name, outcome="refused", reason="it holds a secret's value")
        return None

    async def _save(self, candidate: Candidate, tests: str, count: int) -> HarvestedTool:
        name = candidate.name
        try:
            spec = check(name, candidate.doc, candidate.source, tests)
            info = await self.store.save(self.owner, spec)
        except ToolRefused as exc:
            return HarvestedTool(function=name, outcome="refused", tests=count, reason=describe(exc)[:2000])
        except ApiError as exc:
            return HarvestedTool(function=name, outcome="refused", tests=count, reason=exc.message)
        return HarvestedTool(function=name, outcome="saved", version=info.version, tests=info.tests_passed)

    async def _values(self, calls: list[str]) -> dict[str, str]:
        """call text -> repr of its value, evaluated in the run's session (calls without one left out)."""
        if not calls:
            return {}
        result = await self.session.execute(_EVALUATE.format(calls=repr(calls)), timeout=self.timeout_s)
        if not result.ok or result.result is None:
            log.info("harvest: the calls could not be evaluated again: %s", result.error or "timed out")
            return {}
        try:
            values = json.loads(ast.literal_eval(result.result))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return {}
        if not isinstance(values, list):
            return {}
        return {c: v for c, v in zip(calls, values, strict=False) if isinstance(v, str)}


__all__ = ["Candidate", "Harvest", "build_tests", "candidates"]
