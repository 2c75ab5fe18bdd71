"""The critic: a final answer is checked against the run's evidence before it is accepted (agent.critic).

Two cheap, general checks:

- **numbers**: every number in the answer must be one the model was shown: in its code's outputs (the
  ``Output:`` observations of this run) or in the question; at least one must come from the outputs. A
  number matches when it is equal, or a rounding or truncation of an output to the digits the answer
  wrote (``6386.41`` for ``6386.408``, ``6386`` too); thousands separators are read (``1,234``), and a
  percentage matches its fraction (``45%`` and ``0.45``). Skipped when the answer has no numbers, when it
  is code, or when no code ran in the run (nothing to compare with).
- **examples**: when the question shows examples of a function (``>>> f(1)`` doctest lines with the
  expected output below, or ``f(1) == 2``, ``f(1) -> 2``, ``f(1) ==> 2``, ``f(1) returns 2``) and the
  answer's code or the session defines that function, the examples run in the session
  (:mod:`thinkbox.agent.critic_inside`) and each mismatch is reported. Python sessions only.

When a check fails, the model is told exactly what did not match and gets one more try (the loop goes on);
whatever it answers next stands, with a note when the critic still disagrees: never more than one retry
per run. When the run stops at a limit during that retry, the first answer stands.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from thinkbox.agent import critic_inside
from thinkbox.agent.events import AnswerChecked, CheckName
from thinkbox.agent.prompts import is_literal
from thinkbox.agent.session_helpers import run_helper
from thinkbox.config import AgentSettings
from thinkbox.models.base import Message
from thinkbox.sandbox.session import Session

TIMEOUT_S = 10.0
MAX_EXAMPLES = 12
SHOWN = 5  # problems listed to the model
EXAMPLE = "the question's example "
LAST_CHARS = 200  # of the last output, quoted when the answer's numbers are not in the outputs
_NUMBER = re.compile(
    r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)(\s?%)?"
)
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.S)
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_ARROW = re.compile(r"\s*(?:#\s*)?(?:==>|==|=>|->|\u279e|\u2192|(?:should\s+)?returns?:?)\s*(.+)$", re.I)


@dataclass(frozen=True)
class Number:
    """A number as written: its value, the digits after its point, and whether a % followed."""

    text: str
    value: Decimal
    decimals: int
    percent: bool

    def values(self) -> list[tuple[Decimal, Decimal]]:
        """(absolute value, tolerance) pairs it may stand for: a percentage also as its fraction."""
        tolerance = Decimal(5) * Decimal(10) ** -(self.decimals + 1)
        out = [(abs(self.value), tolerance)]
        if self.percent:
            out.append((abs(self.value) / 100, tolerance / 100))
        return out


def numbers(text: str) -> list[Number]:
    """The numbers in ``text`` (a number inside a word, like ``x2`` or ``2nd``, is not one)."""
    found: list[Number] = []
    for match in _NUMBER.finditer(text):
        written = match.group(0).replace("\u2212", "-")
        percent = written.rstrip().endswith("%")
        digits = written.rstrip("% ").replace(",", "")
        try:
            value = Decimal(digits)
        except InvalidOperation:
            continue
        exponent = value.as_tuple().exponent
        decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        found.append(Number(written.strip(), value, decimals, percent))
    return found


def evidence_numbers(text: str) -> list[Number]:
    """The numbers of an output, where ``1,234`` may also be the list ``1, 234`` written without spaces."""
    found = numbers(text)
    for number in list(found):
        if "," in number.text:
            found.extend(numbers(number.text.replace(",", " ")))
    return found


def supported(number: Number, evidence: list[Number]) -> bool:
    """Whether ``number`` equals one of ``evidence``, or rounds or truncates one to its own digits."""
    for value, tolerance in number.values():
        for seen in evidence:
            for other, _ in seen.values():
                if abs(other - value) <= tolerance or Decimal(0) <= other - value < tolerance * 2:
                    return True
    return False


def unsupported_numbers(answer: str, outputs: str, question: str) -> list[str] | None:
    """The answer's numbers that neither the outputs nor the question show; None when there is nothing
    to check (no numbers in the answer). ``[]``: every number is supported and at least one comes from
    the outputs. When none of them comes from the outputs, all are reported."""
    wanted = numbers(answer)
    if not wanted:
        return None
    shown, given = evidence_numbers(outputs), evidence_numbers(question)
    missing = [n.text for n in wanted if not supported(n, shown) and not supported(n, given)]
    if missing:
        return list(dict.fromkeys(missing))
    if any(supported(n, shown) for n in wanted):
        return []
    return list(dict.fromkeys(n.text for n in wanted))


# -- examples -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    call: str
    want: str
    name: str

    def as_args(self) -> dict[str, str]:
        return {"call": self.call, "want": self.want, "name": self.name}


def examples(question: str) -> list[Example]:
    """The function examples a question shows: doctest ``>>>`` lines with their expected output, and
    lines like ``f(1) == 2`` (also ``->``, ``==>``, ``=>``, ``returns``). An example counts only when its
    call is one expression calling a plain name and its expected value is written out."""
    found: list[Example] = []
    for source, want in _doctests(question):
        if name := _called_name(source):
            found.append(Example(source, want, name))
    for line in question.splitlines():
        stripped = line.strip()
        if stripped.startswith((">>>", "...", "def ", "async def ")):
            continue
        for example in _arrow_examples(stripped):
            found.append(example)
    return list(dict.fromkeys(found))[:MAX_EXAMPLES]


def _doctests(text: str) -> list[tuple[str, str]]:
    """(source, expected output) of each ``>>>`` example in ``text``. The output is the line below it (and
    the next ones while its brackets are open: a long list printed over lines); none, when that line is
    blank, another prompt or the docstring's end (such examples are left out)."""
    lines = [line.strip() for line in text.splitlines()]
    found = []
    for i, line in enumerate(lines):
        if not line.startswith(">>> "):
            continue
        j = i + 1
        source = [line[4:]]
        while j < len(lines) and lines[j].startswith("... "):
            source.append(lines[j][4:])
            j += 1
        want = lines[j] if j < len(lines) else ""
        while want and _open_brackets(want) and j + 1 < len(lines) and lines[j + 1]:
            j += 1
            want += " " + lines[j]
        if want and not want.startswith((">>>", '"""', "'''")):
            found.append(("\n".join(source).strip(), want))
    return found


def _open_brackets(text: str) -> bool:
    return sum(text.count(c) for c in "([{") > sum(text.count(c) for c in ")]}")


def _called_name(source: str) -> str | None:
    """The function an example calls: its one name that is not a builtin, called with literal
    arguments (``f([1, 2])``, ``round(f(3), 2)``); None for anything else (``f(a)``: ``a`` is prose)."""
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        return None
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not hasattr(builtins, n.id)}
    if len(names) != 1:
        return None
    name = names.pop()
    own = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
    ]
    if not own or not all(is_literal(a) for c in own for a in [*c.args, *(k.value for k in c.keywords)]):
        return None
    return name


def _arrow_examples(line: str) -> list[Example]:
    found = []
    for start in _CALL_START.finditer(line):
        end = _closing(line, start.end() - 1)
        if end is None:
            continue
        call = line[start.start() : end + 1]
        arrow = _ARROW.match(line, end + 1)
        if arrow is None or _called_name(call) != start.group(1):
            continue
        want = _literal_prefix(arrow.group(1))
        if want is not None:
            found.append(Example(call, want, start.group(1)))
    return found


def _closing(text: str, open_at: int) -> int | None:
    """The index of the bracket closing the one at ``open_at`` (strings respected), else None."""
    depth, quote = 0, ""
    for i in range(open_at, len(text)):
        c = text[i]
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _literal_prefix(text: str) -> str | None:
    """The longest start of ``text`` (cut at a space) that is a Python literal, without trailing
    punctuation; None when there is none (the line says something in words)."""
    text = text.strip()
    cuts = [len(text), *sorted((m.start() for m in re.finditer(r"\s", text)), reverse=True)][:20]
    for cut in cuts:
        candidate, rest = text[:cut].strip().rstrip(".,;"), text[cut:].strip()
        if not candidate or (rest and not (rest[0].isalpha() or rest[0] in "#(")):
            continue  # "1 + 9 = 10": the value is not written out
        try:
            ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return candidate
    return None


def answer_code(answer: str) -> str:
    """The code in an answer: its longest fenced block, else the whole answer when it is Python that
    defines or imports something; '' when it is not code."""
    blocks = _FENCE.findall(answer)
    code = max(blocks, key=len) if blocks else answer
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    return code if any(isinstance(node, kinds) for node in tree.body) else ""


async def run_examples(session: Session, found: list[Example], code: str) -> list[str] | None:
    """The examples that fail in ``session`` (one line each); None when none could be judged (no
    function of theirs is defined, or the run failed)."""
    args: dict[str, Any] = {"code": code, "examples": [e.as_args() for e in found], "chars": 200}
    reply = await run_helper(session, critic_inside, args, timeout=TIMEOUT_S)
    if not isinstance(reply, list) or len(reply) != len(found):
        return None
    judged = [(e, r) for e, r in zip(found, reply, strict=True) if isinstance(r, dict)]
    if not any(r.get("status") in ("pass", "fail", "error") for _, r in judged):
        return None
    problems = []
    for example, r in judged:
        if r.get("status") == "fail":
            problems.append(f"{example.call} returned {r.get('got')}, expected {example.want}")
        elif r.get("status") == "error":
            problems.append(f"{example.call} raised {r.get('got')}, expected {example.want}")
    return problems


# -- the critic of one run ---------------------------------------------------------------------------
class Critic:
    """Checks a run's final answers; holds the one retry's state. ``counts`` is shared with the run's
    feedback, so ``RunFinished.feedback`` counts the critic's verdicts too."""

    def __init__(self, settings: AgentSettings, session: Session, counts: Counter[str]) -> None:
        self.mode = settings.critic
        self.python = settings.language in ("py", "auto")
        self.session = session
        self.counts = counts
        self.retried: AnswerChecked | None = None  # the failed check that asked for the retry
        self.told = ""  # what the model was told then (not evidence for the next check)

    async def review(
        self, step: int, answer: str, messages: list[Message], question: str, *, room: bool
    ) -> AnswerChecked | None:
        """The verdict on ``answer`` (None when nothing was checked). ``room``: whether a retry is
        possible (steps left). A failed first check asks for a retry (``retry`` set, the loop tells the
        model ``observation``); after it, the answer stands, with a note when the check fails again."""
        if self.mode == "off":
            return None
        answer = answer.strip()
        checks, problems = await self._check(answer, messages, question)
        if not checks:
            return None
        passed = not problems
        first = self.retried is None
        verdict = AnswerChecked(step=step, answer=answer, checks=checks, passed=passed, problems=problems)
        if passed:
            self.counts["critic_passed"] += 1
            self.counts["critic_fixed"] += not first
        elif first and room:
            self.counts["critic_retry"] += 1
            self.told = retry_text(problems, checks)
            verdict = verdict.model_copy(update={"retry": True, "observation": self.told})
            self.retried = verdict
        else:
            self.counts["critic_stood"] += 1
            why = "after its one retry" if not first else "with no step left for a retry"
            note = f"the answer stands {why}, though: " + "; ".join(problems)
            verdict = verdict.model_copy(update={"note": note})
        return verdict

    def resumed(self, retried: AnswerChecked | None) -> None:
        """A resumed run's critic: the retry recorded before the crash (None: none) was the run's one."""
        self.retried, self.told = retried, retried.observation if retried is not None else ""

    def kept(self, step: int) -> AnswerChecked | None:
        """After a retry, the run stopped at a limit: the first answer stands (with a note), else None."""
        if self.retried is None:
            return None
        self.counts["critic_kept"] += 1
        note = "the retry stopped at a limit, so the first answer stands: " + "; ".join(self.retried.problems)
        return self.retried.model_copy(update={"step": step, "retry": False, "observation": "", "note": note})

    async def _check(
        self, answer: str, messages: list[Message], question: str
    ) -> tuple[list[CheckName], list[str]]:
        checks: list[CheckName] = []
        problems: list[str] = []
        code = answer_code(answer)
        if self.mode in ("examples", "all") and self.python and (found := examples(question)):
            failed = await run_examples(self.session, found, code)
            if failed is not None:
                checks.append("examples")
                problems += [EXAMPLE + p for p in failed]
        if self.mode in ("numbers", "all") and not code:
            given, outputs = self._evidence(messages, question)
            missing = unsupported_numbers(answer, "\n".join(outputs), given) if outputs else None
            if missing is not None:
                checks.append("numbers")
                if missing:
                    where = f"{_appear(missing)} in no output of your code (the last: {_last(outputs)})"
                    problems.append(f"{_listed(missing)} in the answer {where}")
        return checks, problems

    def _evidence(self, messages: list[Message], question: str) -> tuple[str, list[str]]:
        """(the question's message, this run's outputs as the model saw them: the observations after it)."""
        start = next(
            (i for i in range(len(messages) - 1, -1, -1)
             if messages[i]["role"] == "user" and question in messages[i]["content"]),
            None,
        )  # fmt: skip
        if start is None:
            return question, []
        outputs = [
            m["content"]
            for m in messages[start + 1 :]
            if m["role"] == "user" and m["content"].startswith("Output:") and m["content"] != self.told
        ]
        return messages[start]["content"], outputs


def _last(outputs: list[str]) -> str:
    """The last output as the model saw it, on one line and short: what a retry may answer with."""
    text = outputs[-1].removeprefix("Output:").split("\nIf this answers the question", 1)[0]
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= LAST_CHARS else flat[: LAST_CHARS - 3] + "...")


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
    return ("the number " if len(items) == 1 else "the numbers ") + shown


def _appear(items: list[str]) -> str:
    return "appears" if len(items) == 1 else "appear"


def retry_text(problems: list[str], checks: list[CheckName]) -> str:
    """What the model is told when its answer failed the check: what did not match, and what to do (for
    a function: correct it and answer with it; for a value: print it and answer with it as printed)."""
    listed = "\n".join(f"- {p}" for p in problems[:SHOWN])
    if any(p.startswith(EXAMPLE) for p in problems):
        todo = (
            "Correct the function: send its whole corrected definition with execute_code and call it on "
            "those examples with print(). When it prints what the question expects, reply with "
            "provide_answer and the whole function definition."
        )
    else:
        todo = (
            "Run code that computes and print()s exactly what the question asks, then reply with "
            "provide_answer and the value as printed."
        )
    return (
        f"Before your answer is accepted it was checked ({' and '.join(checks)}), and this did not match:\n"
        f"{listed}\n{todo}"
    )
