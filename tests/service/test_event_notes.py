"""The notes a run makes about how it answers (route, plan, parts' tests, the answer's check, harvested
tools) reach every interface, not only the terminal: the OpenAI-compatible API's reasoning text and MCP's
progress messages say the same lines as notebooks (tests/test_transcripts.py) and the web page
(tests/web/test_web_route.py). Pure functions of the events: no server is needed to observe them."""

from __future__ import annotations

from typing import Any, cast

from thinkbox.agent.events import (
    AnswerChecked,
    HarvestedTool,
    PartTested,
    RouteChosen,
    StepStarted,
    ToolsHarvested,
)
from thinkbox.service.api.openai_render import ChatRender
from thinkbox.service.mcp.trace import Trace

EVENTS = [
    RouteChosen(route="direct", reason="a program to write", tokens=40, duration_s=1.5),
    PartTested(step=1, name="triple", passed=True),
    AnswerChecked(step=2, answer="7", checks=["numbers"], passed=False, note="7 stands: no retry left"),
    ToolsHarvested(
        tools=[HarvestedTool(function="area", outcome="saved", version=2, tests=3)], duration_s=0.4
    ),
]
LINES = [
    "route: answering directly, without code: a program to write (decided in 1.5 s, 40 tokens)",
    "triple: its test passed",
    "answer checked (numbers): 7 stands: no retry left",
    "tools from this run: area saved as a tool (version 2, 3 tests passed) · 0.4 s",
]


async def test_the_openai_reasoning_text_carries_each_note_and_no_content() -> None:
    render = ChatRender(cast(Any, None), cast(Any, None), "r_1", "http://127.0.0.1/", cast(Any, None))
    for event in EVENTS:
        _, content = await render.feed(event)
        assert content == ""
    assert render.reasoning_text == "".join(f"\n({line})\n" for line in LINES)


def test_mcp_progress_reports_each_note_beside_the_steps() -> None:
    trace = Trace("r_1")
    assert trace.feed(StepStarted(step=1)) == "step 1: thinking"
    assert [trace.feed(event) for event in EVENTS] == LINES
