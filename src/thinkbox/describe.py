"""One line of plain text for the events that say how a run went about answering, not what it computed:
the route it took, a decomposition's plan and its parts' tests, the critic's check of the answer, the tools
a service run left behind.

Every renderer that is not the terminal (notebooks, the OpenAI-compatible API's reasoning text, MCP
progress) shows these lines as they are, so a user of any interface learns the same thing the terminal
says. The text is plain (no markup): each renderer escapes or styles it as its medium needs.
"""

from __future__ import annotations

from thinkbox.agent.events import (
    AnswerChecked,
    Event,
    PartTested,
    PlanMade,
    RouteChosen,
    ToolsHarvested,
)

NOTE_EVENTS = (RouteChosen, PlanMade, PartTested, AnswerChecked, ToolsHarvested)
"""The events :func:`describe` gives a line for."""
NOTE_TYPES = frozenset(cls.model_fields["type"].default for cls in NOTE_EVENTS)
"""Their ``type`` names, for renderers of stored (dict) events."""


def describe(event: Event) -> str | None:
    """The line for ``event``, or None for an event that is not one of these notes."""
    if isinstance(event, RouteChosen):
        how = "answering directly, without code" if event.route == "direct" else "thinking in code"
        cost = f" (decided in {event.duration_s:.1f} s, {event.tokens} tokens)" if event.tokens else ""
        return f"route: {how}: {event.reason}{cost}"
    if isinstance(event, PlanMade):
        if not event.functions:
            return f"plan: {event.note}"
        names = ", ".join(f.name for f in event.functions)
        return f"plan ({event.orchestration}): {names}" + (f" · {event.compose}" if event.compose else "")
    if isinstance(event, PartTested):
        if event.passed:
            return f"{event.name}: its test passed"
        return f"{event.name}: its test failed (check {event.attempt}): {event.error}"
    if isinstance(event, AnswerChecked):
        return _checked(event)
    if isinstance(event, ToolsHarvested):
        return _harvested(event)
    return None


def _checked(event: AnswerChecked) -> str:
    checks = " and ".join(event.checks)
    if event.passed:
        return f"answer checked ({checks}): it matches the evidence"
    if event.retry:
        return f"answer checked ({checks}): asking the model once more: " + "; ".join(event.problems)
    return f"answer checked ({checks}): {event.note}"


def _harvested(event: ToolsHarvested) -> str:
    parts = []
    for tool in event.tools:
        if tool.outcome == "saved":
            parts.append(
                f"{tool.function} saved as a tool (version {tool.version}, {tool.tests} tests passed)"
            )
        else:
            why = f" ({tool.reason.splitlines()[0]})" if tool.reason else ""
            parts.append(f"{tool.function}: {tool.outcome}{why}")
    listed = "; ".join(parts) or "no function to keep"
    return f"tools from this run: {listed} · {event.duration_s:.1f} s"
