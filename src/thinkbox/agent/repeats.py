"""Repeats: a step whose code and output are an earlier step's is not fed back again.

A greedy small model that has its answer in front of it sometimes sends the same successful code again,
and again, until a limit. Code alone does not make a repeat (code that draws random numbers prints
something new each time), so the step runs and its output is compared: when code and output match an
earlier successful step's, the model is told so instead of seeing the output again, and asked for the
answer or another approach. If it sends that code once more, it is refused before running (the loop
re-asks, as it does for failed code sent again); code that ran successfully since clears that refusal,
since the session's state may have changed.

Code is compared normalised: its syntax tree for Python (comments and spacing do not count), else its
lines without surrounding whitespace.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from thinkbox.sandbox.types import ExecutionResult


def normalised(code: str, language: str) -> str:
    if language == "py":
        try:
            return ast.dump(ast.parse(code))
        except SyntaxError:
            pass
    return "\n".join(line.strip() for line in code.strip().splitlines() if line.strip())


def output_of(result: ExecutionResult) -> str:
    return f"{result.stdout}\x00{result.stderr}\x00{result.result}"


@dataclass
class Repeats:
    """What successful steps ran and printed in this run."""

    done: dict[str, tuple[int, str]] = field(default_factory=dict)  # code -> (first step, its output)
    refused: dict[str, int] = field(default_factory=dict)  # code that repeated its output -> that step

    def refusal(self, code: str, language: str) -> str | None:
        """Why ``code`` is not run again (it already repeated an earlier step's output), else None."""
        step = self.refused.get(normalised(code, language))
        if step is None:
            return None
        return (
            f"this code already ran in step {step} and gave the same output as before; running it again "
            "gives nothing new. If that output answers the question, reply with provide_answer and the "
            "value; else try a different approach"
        )

    def after(self, step: int, code: str, language: str, result: ExecutionResult) -> int | None:
        """Record a step's result; the earlier step it repeats (same code, same output), else None."""
        if not result.ok:
            return None
        key = normalised(code, language)
        earlier = self.done.get(key)
        if earlier is not None and earlier[1] == output_of(result):
            self.refused[key] = step
            return earlier[0]
        self.refused.clear()  # something new ran: the session's state may have changed
        self.done[key] = (step, output_of(result))
        return None


def observation(step: int, earlier: int) -> str:
    """What the model is told about step ``step``, which repeated step ``earlier``."""
    return (
        f"Output:\n(the same code and the same output as step {earlier}: see there.) Running it again gives "
        "nothing new. If that output answers the question, reply with provide_answer and the value; "
        "else try a different approach."
    )
