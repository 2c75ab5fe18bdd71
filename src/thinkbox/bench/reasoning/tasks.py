"""Task families: where the questions come from and how an answer is scored.

A family makes ``n`` items from a seed at a difficulty (1 easy, 2 medium, 3 hard) and scores an answer
against its own ground truth. Families, by where that truth comes from:

- reasoning-gym generators with reasoning-gym's own scorers (``gym.py``); any reasoning-gym dataset name
  works, the ten listed in :data:`GYM_FAMILIES` have a tuned difficulty table;
- HumanEval (``humaneval.py``): completions are run with the dataset's tests inside a sandbox session;
  ``humaneval_js`` asks for the same functions in JavaScript and runs the same tests against them;
- generated families with exact answers computed here (``generated.py``): statistics over a CSV placed in
  the workspace, TSP against brute force, 0/1 knapsack, loan amortisation;
- controls where code should not help (``controls.py``): recall and wording questions.

:func:`get_family` resolves a name; :func:`clean_answer` is the one normalisation every arm's answer gets
before scoring, so no arm is favoured by a lenient reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from thinkbox.errors import ConfigError
from thinkbox.sandbox.types import ExecutionResult

Kind = Literal["compute", "code", "control"]
"""compute: the answer needs computation; code: the answer is a program; control: code should not help."""

DIFFICULTIES = (1, 2, 3)
SPLITS: dict[str, int] = {"dev": 0, "test": 7331}
"""Split -> seed. ``dev``: the items prompts and code are tuned on. ``test``: held out; no prompt or code
change is checked against it, its figures are the ones reported."""


def split_of(seed: int) -> str:
    """The split a seed belongs to: ``test`` for the test seed, else ``dev`` (any other seed is a variant
    of development data). Families with a fixed pool of items (HumanEval) draw from that split's half."""
    return "test" if seed == SPLITS["test"] else "dev"


@dataclass(frozen=True)
class Item:
    """One question with its ground truth."""

    family: str
    index: int
    question: str
    expected: str
    """The reference answer, as shown in reports."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Files placed in the workspace (the code arms) or inlined in the prompt (the direct arm)."""
    data: Any = None
    """What the scorer needs besides ``expected`` (a reasoning-gym entry, a HumanEval problem)."""
    answer_tokens: int = 384
    """Most tokens of a direct answer: room for the answer and brief reasoning (a function: more)."""
    session_answer: str = ""
    """Code that prints what the code arms' session holds as the answer after the agent's run (HumanEval:
    the functions it defined); taken when the final answer does not match ``answer_pattern``."""
    answer_pattern: str = ""
    """A regular expression a usable answer matches (HumanEval: the entry point's ``def``)."""


class Checker(Protocol):
    """Runs a program in a fresh sandbox session (HumanEval's tests): never in the host process."""

    async def run(self, code: str, *, timeout_s: float) -> ExecutionResult: ...


class Family(Protocol):
    name: str
    kind: Kind

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        """``n`` items, the same for the same ``seed`` and ``difficulty``."""
        ...

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        """Whether ``answer`` (as the model wrote it) is right."""
        ...


def check_difficulty(difficulty: int) -> int:
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"difficulty {difficulty} is not one of 1, 2, 3; fix --difficulty")
    return difficulty


def own_families() -> dict[str, Family]:
    """thinkbox's own families (not reasoning-gym) by name."""
    from thinkbox.bench.reasoning import controls, generated, humaneval, humaneval_js

    table: list[Family] = [
        humaneval.HumanEval(),
        humaneval_js.HumanEvalJs(),
        generated.CsvStats(),
        generated.Tsp(),
        generated.Knapsack(),
        generated.Loan(),
        controls.Recall(),
        controls.Wording(),
    ]
    return {f.name: f for f in table}


def get_family(name: str) -> Family:
    """A family by name: thinkbox's own, else any reasoning-gym dataset. ConfigError names the fix."""
    own = own_families()
    if name in own:
        return own[name]
    from thinkbox.bench.reasoning import gym

    if name in gym.dataset_names():
        return gym.GymFamily(name)
    raise ConfigError(
        f"unknown task family {name!r}; fix --families: use thinkbox's own ({', '.join(sorted(own))}) "
        "or a reasoning-gym dataset name (listed by: python -c "
        "'import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))')"
    )


_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n?(.*?)```", re.S)
_LEAD = re.compile(r"^(?:final answer|the answer is|answer)\s*[:=]?\s*", re.I)
_LAST_ANSWER_IS = re.compile(r"(?:final answer|answer is)\s*[:=]?\s*(.+)$", re.I | re.S)


def clean_answer(text: str) -> str:
    """The answer with wrapping removed: code fences, backticks, 'Answer:' and a trailing full stop.

    Applied to every arm's answer before scoring (HumanEval extracts code itself)."""
    text = text.strip()
    fenced = _FENCE.findall(text)
    if fenced:
        text = fenced[-1].strip()
    if (m := _LAST_ANSWER_IS.search(text)) and "\n" not in m.group(1).strip():
        text = m.group(1)
    text = _LEAD.sub("", text.strip()).strip().strip("`*").strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


_ANSWER_LINE = re.compile(r"^[\W_]*(?:final answer|answer)[*_\s]*[:=][*_\s]*(.+?)\s*$", re.I | re.M)


_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def final_line_answer(text: str) -> str:
    """What a reply in text gives as its answer: the content of its last ``Answer: ...`` line, else of
    its last ``\\boxed{...}`` (the form math-tuned models end with), else the whole reply (which
    :func:`clean_answer` and the family's scorer then read)."""
    found = _ANSWER_LINE.findall(text) or _BOXED.findall(text)
    return str(found[-1]).strip() if found else text.strip()


def last_number_text(text: str) -> str | None:
    """The last number written in ``text`` as written, less thousands separators, or None."""
    found = _NUMBER.findall(clean_answer(text).replace("$", ""))
    return found[-1].replace(",", "") if found else None


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (commas as thousands separators), or None."""
    found = last_number_text(text)
    try:
        return None if found is None else float(found)
    except ValueError:
        return None


def number_matches(answer: str, expected: float, tolerance: float = 0.0) -> bool:
    value = last_number(answer)
    return value is not None and abs(value - expected) <= tolerance + 1e-9
