"""Router designs: per question, decide whether thinking in code helps. ``--router`` picks one.

- ``classify``: one short, constrained model call labels the question ``code`` or ``direct``; the item
  then goes to that arm. Costs a few tokens; the label is visible in the results (``route``). With greedy
  decoding (temperature 0) and that arm already run on the item, its result is taken as it is (the same
  request gives the same answer) and its time is added to the router's.
- ``agent``: the agent with its usual system prompt, which allows ``provide_answer`` at step 1: the model
  decides inside the loop.
- ``step1``: the agent's own first step is the classifier: the model gets exactly the agent's first
  request (system prompt, workspace files, question; the action schema); ``execute_code`` sends the item
  to the code arm, ``provide_answer`` to the direct arm (an unusable reply: code). Under greedy decoding
  both arms' results are reused, so the router can only lose where it picked the worse arm.
- ``fallback``: ``step1``, and when the code path ends without an answer (the agent stopped at a limit:
  steps, repeated errors, time), the direct arm answers instead (reused when known), so a question the
  model cannot code its way through still gets the answer from memory. Route ``code>direct``.
- ``kind``: one short, constrained call asks whether the answer is a program the question asks for (a
  function to write) or a value; a program goes to the direct arm, a value to ``fallback`` (whose result
  is reused when this run has it, under greedy decoding). Measured reason: the 1.5B model's functions
  written in the loop were worse than its direct ones (HumanEval 45 % against 65 %), and ``step1`` sends
  every such question to code because the model always starts by defining the function.
- ``verify``: answer directly first, then the agent sees that answer and checks it with code when the
  question needs computation (else it repeats it). Costs both arms (under greedy decoding the direct
  arm's answer is reused when it is known).

The default is :data:`DEFAULT_ROUTER`, ``kind``: on every family measured (fifteen computation and code
families at 20 items, the controls at 60) it equals ``fallback`` except on HumanEval, where it sends all 20
questions to the direct arm (65 % against ``fallback``'s 50 %): worst shortfall 1.7 points (wording), the
classification call costs 0.5-2 s per question. ``fallback`` equals ``step1`` except where the code
path stopped without an answer, so it is never below ``step1``, and it lifted time_intervals from the code
arm's 55 % to the direct arm's 60 % (docs/bench/reasoning-more). ``step1`` was chosen over the others on
these numbers (Qwen2.5-Coder-1.5B, greedy):
``classify`` sent 2 of 3 letter-counting questions to ``direct`` in a ``--quick`` run (33 % against 100 %
for code). On 20 items each of five computation families and two controls (docs/bench/reasoning),
``agent`` and ``step1`` both ran code on every computation item and on no control item; ``agent`` fell
10 points below the code arm on the wording control (its own answers from memory are worse than either
arm's), ``step1``, which takes the arms' answers, 5 points (one item: the direct arm's answer); with the
controls extended to 60 items, 6.7 and 1.7 points (docs/bench/reasoning-controls).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from thinkbox.agent import prompts
from thinkbox.agent.loop import action_request
from thinkbox.agent.parse import InvalidAction, parse_action
from thinkbox.bench.reasoning import arms
from thinkbox.bench.reasoning.arms import ArmContext, Outcome
from thinkbox.bench.reasoning.tasks import Item
from thinkbox.errors import ConfigError
from thinkbox.models.base import Message, ModelReply, ModelRequest, complete
from thinkbox.sandbox.types import FileInfo

CLASSIFY_PROMPT = """\
Decide how the question below should be answered. Reply "code" if getting it right needs exact \
computation: arithmetic with big or many numbers, counting letters or items, dates and times, data in a \
file, sorting, searching, optimising, or writing and testing a program. Reply "direct" if it asks for a \
well-known fact, a word or its form, an opinion, or anything a person answers from memory.

Question: {question}

Reply with one JSON object: {{"route": "code"}} or {{"route": "direct"}}."""

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"route": {"type": "string", "enum": ["code", "direct"]}},
    "required": ["route"],
    "additionalProperties": False,
}

KIND_PROMPT = """\
Is the answer to the question below a piece of program code that you are asked to write (for example a \
function definition), or a value (a number, a word, a date, a list)?

Question: {question}

Reply with one JSON object: {{"answer_is": "program"}} or {{"answer_is": "value"}}."""

KIND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer_is": {"type": "string", "enum": ["program", "value"]}},
    "required": ["answer_is"],
    "additionalProperties": False,
}

VERIFY_TEMPLATE = (
    "{question}\n\n(An answer given from memory, without code, was: {answer}. If the question needs "
    "computation, check that answer with code and give the checked answer; if not, give it as it is.)"
)


async def classify(item: Item, ctx: ArmContext) -> Outcome:
    started = time.monotonic()
    reply = await _label(ctx, CLASSIFY_PROMPT.format(question=item.question), ROUTE_SCHEMA)
    route = "code" if "code" in reply.text.lower() else "direct"
    return await _take(route, item, ctx, started, reply)


async def _label(ctx: ArmContext, prompt: str, schema: dict[str, Any]) -> ModelReply:
    """One short reply constrained to ``schema`` (a label), at the run's temperature."""
    request = ModelRequest(
        messages=[{"role": "user", "content": prompt}],
        json_schema=schema,
        max_tokens=16,
        temperature=ctx.settings.model.temperature,
    )
    return await complete(ctx.model, request)


async def agent(item: Item, ctx: ArmContext) -> Outcome:
    return await arms.agent(item, ctx)


async def step1(item: Item, ctx: ArmContext) -> Outcome:
    started = time.monotonic()
    files = [FileInfo(path=name, size=len(data), is_dir=False) for name, data in item.files.items()]
    messages: list[Message] = [
        {"role": "system", "content": prompts.system_prompt(files)},
        {"role": "user", "content": item.question},
    ]
    reply = await complete(ctx.model, action_request(messages, ctx.settings))
    try:
        route = "code" if parse_action(reply.text).action.runs_code else "direct"
    except InvalidAction:
        route = "code"
    return await _take(route, item, ctx, started, reply)


async def fallback(item: Item, ctx: ArmContext) -> Outcome:
    outcome = await step1(item, ctx)
    if outcome.route != "code" or outcome.stop == "answered":
        return outcome
    direct = await _direct(item, ctx)
    return dataclasses.replace(
        outcome,
        answer=direct.answer,
        from_session=direct.from_session,
        stop=direct.stop,
        route="code>direct",
        steps=outcome.steps + direct.steps,
        tokens=outcome.tokens + direct.tokens,
        wall_s=outcome.wall_s + direct.wall_s,
        notes=[*outcome.notes, f"the code path stopped ({outcome.stop}): the direct answer"],
    )


async def kind(item: Item, ctx: ArmContext) -> Outcome:
    started = time.monotonic()
    reply = await _label(ctx, KIND_PROMPT.format(question=arms.with_files(item)[:3000]), KIND_SCHEMA)
    if "program" in reply.text:
        return await _take("direct", item, ctx, started, reply)
    decided_s = time.monotonic() - started  # fallback's own time is in its outcome, reused or not
    outcome = _known(item, ctx, "router:fallback") or await fallback(item, ctx)
    return dataclasses.replace(
        outcome,
        steps=outcome.steps + 1,
        tokens=outcome.tokens + reply.usage.total,
        wall_s=outcome.wall_s + decided_s,
    )


def _known(item: Item, ctx: ArmContext, arm: str) -> Outcome | None:
    """What ``arm`` gave for ``item`` in this run, when it may be reused (greedy decoding)."""
    return ctx.earlier(item, arm) if ctx.earlier is not None else None


async def _direct(item: Item, ctx: ArmContext) -> Outcome:
    """The direct arm's outcome: reused when known, else asked for."""
    return _known(item, ctx, "direct") or await arms.direct(item, ctx)


async def _take(route: str, item: Item, ctx: ArmContext, started: float, reply: ModelReply) -> Outcome:
    """The outcome of the arm ``route`` (reused when known), charged with the router's own model call."""
    decided_s = time.monotonic() - started
    known = _known(item, ctx, route)
    if known is not None:  # greedy decoding: the arm would answer exactly as it did
        outcome = dataclasses.replace(known, notes=[*known.notes, f"{route} arm's result reused"])
        outcome.wall_s += decided_s
    else:
        outcome = await (arms.code(item, ctx) if route == "code" else arms.direct(item, ctx))
        outcome.wall_s = time.monotonic() - started
    outcome.route = route
    outcome.steps += 1
    outcome.tokens += reply.usage.total
    return outcome


async def verify(item: Item, ctx: ArmContext) -> Outcome:
    first = await _direct(item, ctx)
    question = VERIFY_TEMPLATE.format(question=item.question, answer=(first.answer or "")[:500])
    outcome = await arms.agent(item, ctx, question=question)
    outcome.route = "verify:code" if outcome.code_ran else "verify:direct"
    outcome.steps += first.steps
    outcome.tokens += first.tokens
    outcome.wall_s += first.wall_s
    return outcome


RouterFn = Callable[[Item, ArmContext], Awaitable[Outcome]]
ROUTERS: dict[str, RouterFn] = {
    "classify": classify,
    "agent": agent,
    "step1": step1,
    "fallback": fallback,
    "kind": kind,
    "verify": verify,
}
DEFAULT_ROUTER = "kind"


def get_router(name: str) -> RouterFn:
    if name not in ROUTERS:
        raise ConfigError(f"unknown router design {name!r}; fix --router: one of {', '.join(ROUTERS)}")
    return ROUTERS[name]
