"""Which language should the agent think in? The arms ``code:py``, ``code:js`` and ``code:both``.

- ``code:py`` / ``code:js``: the agent in a fresh session, its language set to Python or JavaScript
  (agent.language), with that language's system prompt and the hint to work the answer out in it
  (``code:py`` sends exactly what the ``code`` arm sends with agent.language py).
- ``code:both``: the item once in Python and once in JavaScript, each in a fresh session, nothing reused
  from the other arms. When the two answers agree (:func:`same_answer`) that answer stands; when they
  differ (or one has none), a third attempt in Python is told both earlier answers and that they disagree,
  and its answer stands. The result records whether they agreed and every attempt's answer, so the report
  gives the agreement rate and the accuracy when they agreed and when they did not.

The JavaScript arms answer values only: a family whose answer is a program (HumanEval, whose tests are
Python) is refused with a ConfigError naming the arms that work there.
"""

from __future__ import annotations

import re

from thinkbox.bench.reasoning import arms
from thinkbox.bench.reasoning.arms import ArmContext, Outcome
from thinkbox.bench.reasoning.report import Attempt
from thinkbox.bench.reasoning.tasks import Item, clean_answer, last_number_text

LANGUAGE_ARMS = ("code:py", "code:js", "code:both")
HINTS = {
    "py": arms.CODE_HINT,
    "js": "\n\nFor every question in this session: work the answer out with JavaScript (execute_code) "
    "before you give it with provide_answer.",
}
THIRD_ATTEMPT = (
    "{question}\n\n(Two earlier attempts disagree: one worked it out in Python and answered {py}, the "
    "other in JavaScript and answered {js}. Work it out again with code, carefully, check which is right, "
    "and give the answer.)"
)


def _fold(answer: str) -> str:
    return " ".join(clean_answer(answer).casefold().split())


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two answers say the same: equal after the benchmark's cleaning (:func:`clean_answer`), case
    and spaces folded, or both ending in the same number (``The product is 1,234.`` and ``1234``)."""
    if not a or not b or not a.strip() or not b.strip():
        return False
    if _fold(a) == _fold(b):
        return True
    x, y = last_number_text(a), last_number_text(b)
    if x is None or y is None:
        return False
    try:
        return float(x) == float(y) and _words(a) == _words(b)
    except ValueError:
        return False


_FILLER = frozenset(
    ("the", "is", "a", "an", "answer", "final", "of", "and", "it", "are", "product", "result", "total", "sum")
)


def _words(answer: str) -> set[str]:
    """The words of an answer besides numbers and filler, so that ``Monday 3`` and ``Friday 3`` differ."""
    return set(re.findall(r"[a-z]+", clean_answer(answer).casefold())) - _FILLER


async def in_language(item: Item, ctx: ArmContext, language: str, question: str | None = None) -> Outcome:
    outcome = await arms.agent(item, ctx, hint=HINTS[language], question=question, language=language)
    outcome.route = f"code:{language}"
    return outcome


async def code_py(item: Item, ctx: ArmContext) -> Outcome:
    return await in_language(item, ctx, "py")


async def code_js(item: Item, ctx: ArmContext) -> Outcome:
    return await in_language(item, ctx, "js")


async def code_both(item: Item, ctx: ArmContext) -> Outcome:
    py = await in_language(item, ctx, "py")
    js = await in_language(item, ctx, "js")
    runs = [py, js]
    agreed = same_answer(py.answer, js.answer)
    if agreed:
        final, route = py, "agree"
    else:
        question = THIRD_ATTEMPT.format(question=item.question, py=_shown(py.answer), js=_shown(js.answer))
        final = await in_language(item, ctx, "py", question=question)
        runs.append(final)
        route = "disagree>py"
    return Outcome(
        answer=final.answer,
        code_ran=any(r.code_ran for r in runs),
        steps=sum(r.steps for r in runs),
        tokens=sum(r.tokens for r in runs),
        wall_s=sum(r.wall_s for r in runs),
        stop=final.stop,
        route=route,
        from_session=final.from_session,
        notes=[n for r in runs for n in r.notes],
        agreed=agreed,
        attempts=[
            Attempt(language=lang, answer=r.answer, steps=r.steps, tokens=r.tokens, wall_s=round(r.wall_s, 3),
                    stop=r.stop)
            for lang, r in zip(("py", "js", "py"), runs, strict=False)
        ],
    )  # fmt: skip


def _shown(answer: str | None) -> str:
    return "nothing (it stopped without an answer)" if not answer else repr(clean_answer(answer)[:200])
