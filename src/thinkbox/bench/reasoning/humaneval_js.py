"""HumanEval in JavaScript (``humaneval_js``): the same problems, the answer is a JavaScript function, and
the dataset's own Python tests decide.

No JavaScript port of the tests is needed: the checker (a Python program run in a fresh sandbox session,
never in the host process) starts one ``node`` process holding the candidate, and hands the dataset's
``check`` a ``candidate`` that sends each call's arguments to it as JSON and reads the result back. JSON
has no tuples and one number type, so a result is given the shape of the reference solution's result for
the same arguments (an array becomes a tuple where the reference returns a tuple; a whole float an int
where it returns an int); values are never changed. Arguments that JSON cannot carry fail the item.

The code arms' answer: their final answer when it defines the entry point; else the functions their
JavaScript session holds (:func:`session_source`).
"""

from __future__ import annotations

import re
from typing import Any

from thinkbox.bench.reasoning.humaneval import HumanEval
from thinkbox.bench.reasoning.tasks import Checker, Item, Kind

QUESTION = (
    "Write a JavaScript function named `{entry}` that does what the docstring of this Python function "
    "says, with the same parameters in the same order (Python lists and tuples are arrays, dicts are "
    "objects, None is null). Reply with the whole function definition as plain JavaScript (no "
    "require/import, no module.exports).\n\n{prompt}"
)

_SESSION_SOURCE = """\
(() => {
  const seen = new Set(), found = [];
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    let value;
    try { value = eval(name); } catch { return; }
    if (typeof value !== 'function') return;
    const source = Function.prototype.toString.call(value);
    if (/\\[native code\\]/.test(source)) return;
    found.push(/^(async\\s+)?(function|class)\\b/.test(source) ? source : `const ${name} = ${source};`);
    for (const call of source.matchAll(/\\b([A-Za-z_$][\\w$]*)\\s*\\(/g)) visit(call[1]);
  };
  visit(ENTRY);
  console.log(found.reverse().join('\\n\\n'));
})();
"""


def session_source(entry: str) -> str:
    """JavaScript that prints the source of ``entry`` as the session's interpreter holds it, with the
    functions it calls (found by name, one call deep at a time), helpers first. A function declared with
    const/let is written back as such."""
    return _SESSION_SOURCE.replace("ENTRY", repr(entry))


_FENCE = re.compile(r"```(?:javascript|js|node)?\s*\n(.*?)```", re.S)

_RUNNER = """
const __readline = require('readline');
/*CANDIDATE*/
;const __entry = (() => { try { return ENTRY; } catch { return null; } })();
__readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let reply;
  try {
    if (typeof __entry !== 'function') throw new Error('no function named ENTRY was defined');
    const value = __entry(...JSON.parse(line));
    reply = { ok: true, value: value === undefined ? null : value };
  } catch (e) {
    reply = { ok: false, error: String((e && e.stack) || e).slice(0, 500) };
  }
  process.stdout.write(JSON.stringify(reply) + '\\n');
});
"""

_HARNESS = """\
import copy, json, subprocess

_node = subprocess.Popen(["node", "-e", {runner!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
_reference_namespace = {{}}
exec({reference!r}, _reference_namespace)
_reference = _reference_namespace[{entry!r}]


def _like(value, reference):
    if isinstance(reference, tuple) and isinstance(value, list):
        if len(value) != len(reference):
            return tuple(value)
        return tuple(_like(v, r) for v, r in zip(value, reference))
    if isinstance(reference, list) and isinstance(value, list):
        if reference and len(value) == len(reference):
            return [_like(v, r) for v, r in zip(value, reference)]
        return value
    if isinstance(reference, int) and not isinstance(reference, bool) and isinstance(value, float):
        return int(value) if value.is_integer() else value
    return value


def candidate(*args):
    _node.stdin.write(json.dumps(list(args)) + "\\n")
    _node.stdin.flush()
    line = _node.stdout.readline()
    if not line:
        raise RuntimeError("node exited: " + _node.stderr.read()[-500:])
    reply = json.loads(line)
    if not reply["ok"]:
        raise RuntimeError(reply["error"])
    try:
        reference = _reference(*copy.deepcopy(args))
    except Exception:
        return reply["value"]
    return _like(reply["value"], reference)


{test}

try:
    check(candidate)
finally:
    _node.kill()
"""


def extract_code(answer: str) -> str:
    """The JavaScript in an answer: the longest fenced block if there is one, else the answer as written."""
    blocks = _FENCE.findall(answer)
    return str(max(blocks, key=len)).strip("\n") if blocks else answer.strip("\n")


def program(problem: dict[str, Any], answer: str) -> str:
    """The Python program the checker runs: node holding the candidate, the dataset's tests against it."""
    entry: str = problem["entry_point"]
    runner = _RUNNER.replace("/*CANDIDATE*/", extract_code(answer)).replace("ENTRY", entry)
    reference = problem["prompt"] + problem["canonical_solution"]
    return _HARNESS.format(runner=runner, reference=reference, entry=entry, test=problem["test"])


def defines(entry: str) -> str:
    """A pattern for an answer that defines ``entry`` (a declaration, or a const/let/var binding)."""
    name = re.escape(entry)
    return rf"(?m)(\bfunction\s*\*?\s*{name}\s*\(|\b(?:const|let|var)\s+{name}\s*=)"


class HumanEvalJs:
    name = "humaneval_js"
    kind: Kind = "code"
    answer_language = "js"

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.timeout_s = timeout_s
        self._python = HumanEval()

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        """The items ``humaneval`` draws for the same seed and difficulty, asked in JavaScript."""
        return [
            Item(
                family=self.name,
                index=item.index,
                question=QUESTION.format(entry=item.data["entry_point"], prompt=item.data["prompt"]),
                expected=item.expected,
                data=item.data,
                answer_tokens=item.answer_tokens,
                session_answer=session_source(item.data["entry_point"]),
                answer_pattern=defines(item.data["entry_point"]),
            )
            for item in self._python.items(n, seed, difficulty)
        ]

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        if not re.search(defines(item.data["entry_point"]), extract_code(answer)):
            return False
        result = await checker.run(program(item.data, answer), timeout_s=self.timeout_s)
        return result.ok


__all__ = ["HumanEvalJs", "extract_code", "program"]
