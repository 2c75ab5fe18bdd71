"""The router arm: the product's own routing (:func:`thinkbox.agent.route.run_routed`), run for real.

Each item gets a fresh sandbox session with its files, and ``run_routed(route="auto")`` answers it exactly
as ``thinkbox ask --route auto`` would: the label call, the loop's first action, the direct answer or the
code route and its fallback (see :mod:`thinkbox.agent.route`). Nothing is reused from the other arms: the
router's result is its own run, so its shortfall against the better arm is measured, not built in. The
outcome records the route taken (``code``, ``direct``, or ``code>direct`` when the code route stopped at a
limit and the direct route answered) and the decision's own cost (``route_tokens``, ``route_s``: the label
call), which the report averages per family.

Earlier designs (a plain classifier, the agent alone, the first step alone, a verify pass) were measured
with reused arm results; ``docs/bench/route.md`` says what they showed and why ``auto`` combines the label
call, the first step and the fallback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from thinkbox.agent.events import CodeStarted, FinalAnswer, RouteChosen, RunError, RunFinished
from thinkbox.agent.route import run_routed
from thinkbox.bench.reasoning import arms
from thinkbox.bench.reasoning.arms import ArmContext, Outcome, RunFailed
from thinkbox.bench.reasoning.tasks import Item
from thinkbox.errors import ConfigError


async def auto(item: Item, ctx: ArmContext) -> Outcome:
    """The product's ``auto`` route on ``item``, in a fresh session with the item's files."""
    started = time.monotonic()
    outcome = Outcome(answer=None)
    routes: list[str] = []
    async with ctx.pool.lease() as session:
        for name, data in item.files.items():
            await session.put_file(name, data)
        async for event in run_routed(
            item.question,
            model=ctx.model,
            session=session,
            settings=ctx.settings,
            route="auto",
            direct_max_tokens=item.answer_tokens,
        ):
            if isinstance(event, RouteChosen):
                routes.append(event.route)
                outcome.route_tokens += event.tokens
                outcome.route_s += event.duration_s
            elif isinstance(event, CodeStarted):
                outcome.code_ran = True
            elif isinstance(event, FinalAnswer):
                outcome.answer = event.answer
            elif isinstance(event, RunError):
                raise RunFailed(event)
            elif isinstance(event, RunFinished):
                outcome.steps, outcome.tokens, outcome.stop = event.steps, event.tokens, event.status
        if (
            outcome.code_ran
            and item.session_answer
            and not re.search(item.answer_pattern, outcome.answer or "")
        ):
            await arms.answer_from_session(item, session, outcome)
    outcome.route = ">".join(routes) or None
    outcome.wall_s = time.monotonic() - started
    return outcome


RouterFn = Callable[[Item, ArmContext], Awaitable[Outcome]]
ROUTERS: dict[str, RouterFn] = {"auto": auto}
DEFAULT_ROUTER = "auto"


def get_router(name: str) -> RouterFn:
    if name not in ROUTERS:
        raise ConfigError(f"unknown router design {name!r}; fix --router: one of {', '.join(ROUTERS)}")
    return ROUTERS[name]
