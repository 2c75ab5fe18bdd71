"""What a run tells the world: typed events, one JSON object each.

:func:`thinkbox.agent.loop.run_agent` yields these; the CLI renders them, the transcript writer stores
them as JSON lines, the web service streams them. Each has a ``type`` literal, so a line of JSON maps back
to its class with :func:`parse_event`. A run yields, in order (a run resumed after a crash starts
with ``RunResumed`` instead, right after the events recorded before the crash)::

    RunStarted [FilesPreviewed] Notice* | RunResumed
    [RouteChosen] [PlanMade]
    (StepStarted ThoughtDelta* (ParseFailed ThoughtDelta*)* [ActionParsed
        [CodeRejected
         | CodeStarted (OutputChunk | DisplayProduced | NetworkRequest)* Notice* ExecutionFinished]])*
    [AnswerChecked]  (after a provide_answer ActionParsed; a retry's goes on with StepStarted)
    FinalAnswer [ToolsHarvested] | LimitReached | RunError
    RunFinished

Routed runs (:func:`thinkbox.agent.route.run_routed`) say which route they took with ``RouteChosen``: right
after ``RunStarted``, or under ``auto`` after step 1's ``ActionParsed`` (the model's first action decided),
and once more when the code route stopped at a limit and the direct route answers instead (its
``LimitReached`` is not sent: the run's outcome is the direct answer).

Decomposed runs (:mod:`thinkbox.agent.decompose`, agent.decompose) say what they planned with
``PlanMade``; the steps that follow write one planned function after another, each ending with a
``PartTested`` (the plan's test, run in the session), then compose them.

``FilesPreviewed``, ``CodeRejected`` and ``Notice`` come from the loop's feedback
(:mod:`thinkbox.agent.feedback`): what the model was told about the files, code refused by the lint check,
and notes such as a repeated step or documentation looked up after an error. ``ToolsHarvested`` comes
from the service only (:mod:`thinkbox.service.tools.harvest`): after the answer, the functions the run
defined and called, saved as the tenant's tools or not, and why. ``AnswerChecked`` is the critic's
verdict on a final answer (:mod:`thinkbox.agent.critic`); a failed first check asks the model once more,
so a run may hold two (the second, or one after a limit, says why the answer stands).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from thinkbox.sandbox.types import ExecutionResult

LimitName = Literal["steps", "wall_time", "consecutive_errors", "tokens", "context"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: float = Field(default_factory=time.time, description="Unix time the event was made.")


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    run_id: str
    question: str
    model: str = Field(description="The model backend's name.")
    sandbox: str = Field(description="The sandbox backend's name.")
    files: list[str] = Field(default_factory=list, description="Files in the workspace at the start.")


class RunResumed(_Event):
    """The run goes on after its process died: the steps recorded before are kept (the model is not asked
    for them again) and the sandbox state was rebuilt by running their code again in a fresh session."""

    type: Literal["run_resumed"] = "run_resumed"
    run_id: str
    step: int = Field(description="The last step recorded before the interruption (0: none).")
    replayed_cells: int = Field(description="Code cells run again to rebuild the session's state.")
    message: str = Field("", description="What happens next, e.g. that step N's code runs again.")


class RouteChosen(_Event):
    """How the run answers: ``direct`` (one model call, no code) or ``code`` (the loop), and why."""

    type: Literal["route_chosen"] = "route_chosen"
    route: Literal["code", "direct"]
    reason: str = Field(description="Why: the setting that fixed it, or what the model's answers showed.")
    tokens: int = Field(0, description="Tokens the decision itself cost (the label call; 0: none).")
    duration_s: float = Field(0.0, description="Seconds the decision itself took (0: none).")


class PlannedFunction(BaseModel):
    """One function of a decomposition plan: what to write and the test that checks it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    signature: str = Field(description='E.g. "def total(items: list[int]) -> int".')
    contract: str = Field(description="What it takes and returns.")
    test: str = Field(description="One Python assert that calls it on a small example.")


class PlanMade(_Event):
    """The plan of a decomposed run (agent.decompose): the functions to write and test, then how they are
    composed. No functions: the plain loop answers (``note`` says why: none were needed, or the reply was
    not a usable plan)."""

    type: Literal["plan_made"] = "plan_made"
    orchestration: Literal["chain", "class"]
    functions: list[PlannedFunction] = Field(default_factory=list)
    compose: str = Field("", description="How the functions together answer the question, as planned.")
    note: str = Field("", description="Why the plan is empty, when it is.")
    tokens: int = Field(0, description="Tokens the plan call cost.")
    duration_s: float = Field(0.0, description="Seconds the plan call took.")


class PartTested(_Event):
    """A planned function's test, run in the session after the steps that wrote it."""

    type: Literal["part_tested"] = "part_tested"
    step: int = Field(description="The last step of the run so far.")
    name: str
    passed: bool
    attempt: int = Field(1, description="1 for the first check, 2 after the failure was fed back, ...")
    error: str = Field("", description="What failed (the test's error), empty when it passed.")


class StepStarted(_Event):
    type: Literal["step_started"] = "step_started"
    step: int


class ThoughtDelta(_Event):
    type: Literal["thought_delta"] = "thought_delta"
    step: int
    text: str


class ParseFailed(_Event):
    type: Literal["parse_failed"] = "parse_failed"
    step: int
    attempt: int = Field(description="1 for the first reply of the step, 2 for the first re-ask, ...")
    error: str = Field(
        description="What was wrong (not a valid action, or failed code resent unchanged), told to the model."
    )
    raw: str = Field(description="The reply as the model wrote it.")
    tokens: int = Field(0, description="Tokens the run has used so far, this reply included.")


class ActionParsed(_Event):
    type: Literal["action_parsed"] = "action_parsed"
    step: int
    thought: str
    action: str
    code: str = ""
    final_answer: str = ""
    language: str | None = Field(None, description="The language the action named (agent.language auto).")
    repairs: list[str] = Field(default_factory=list, description="What the tolerant parser had to fix.")
    tokens: int = Field(0, description="Tokens the run has used so far, this reply included.")


class CodeStarted(_Event):
    type: Literal["code_started"] = "code_started"
    step: int
    code: str
    language: str = "py"


class OutputChunk(_Event):
    type: Literal["output_chunk"] = "output_chunk"
    step: int
    name: Literal["stdout", "stderr"]
    text: str


class DisplayProduced(_Event):
    type: Literal["display_produced"] = "display_produced"
    step: int
    mime: dict[str, str] = Field(description="MIME type -> content (base64 for images).")


class FilesPreviewed(_Event):
    """The structure of the workspace's files (columns, sheets, keys, first lines), read in the session
    before the model's first step and added to the question (agent.previews)."""

    type: Literal["files_previewed"] = "files_previewed"
    files: list[str] = Field(description="The files described.")
    text: str = Field(description="What the model was told, after the question.")


class CodeRejected(_Event):
    """The action's code was not run: a check before running found a syntax error or an undefined name
    (agent.lint). The step counts as failed."""

    type: Literal["code_rejected"] = "code_rejected"
    step: int
    code: str
    problems: list[str] = Field(description="One line per problem, e.g. \"line 2: undefined name 'price'\".")
    observation: str = Field(description="What the model was told instead of the code's output.")


NoticeKind = Literal["repeat", "docs", "lint_unavailable", "preview_failed"]


class Notice(_Event):
    """Something the loop noticed and told the model (or the user): a step that repeated an earlier step's
    code and output (``repeat``), documentation read after a TypeError, AttributeError or KeyError
    (``docs``), a check that could not run (``lint_unavailable``, ``preview_failed``)."""

    type: Literal["notice"] = "notice"
    step: int = Field(0, description="The step it is about; 0 for the run's start.")
    kind: NoticeKind
    message: str


class ExecutionFinished(_Event):
    type: Literal["execution_finished"] = "execution_finished"
    step: int
    result: ExecutionResult = Field(
        description="The result; its ``display`` list is empty (each item came as a DisplayProduced event)."
    )
    observation: str = Field(description="What the model was told about this execution.")
    session_restarted: bool = Field(False, description="The interpreter had died and was started again.")
    assigned: str = Field(
        "", description="The code printed nothing: ``name = value`` lines for what its last line assigned."
    )


class NetworkRequest(_Event):
    """A request the session's code sent through the egress proxy (``thinkbox.service.egress``), forwarded
    or refused. Secrets are named, never shown. Comes while a step's code runs, between its output."""

    type: Literal["network_request"] = "network_request"
    step: int = Field(0, description="The step whose code sent it (0: outside a run's steps).")
    host: str
    port: int
    method: str
    path: str = Field(description="The path, without the query string.")
    status: int = Field(0, description="The HTTP status the session got (0: none, the transfer failed).")
    bytes_up: int = 0
    bytes_down: int = 0
    secrets: list[str] = Field(default_factory=list, description="Names of the secrets swapped in.")
    refused: bool = False
    reason: str = Field("", description="Why it was refused or failed; empty when it went through.")
    duration_ms: float = 0.0


CheckName = Literal["numbers", "examples"]


class AnswerChecked(_Event):
    """The critic checked a final answer against the run's evidence (agent.critic): its numbers against
    the code's outputs, a function against the question's examples, run in the session."""

    type: Literal["answer_checked"] = "answer_checked"
    step: int
    answer: str = Field(description="The answer checked.")
    checks: list[CheckName] = Field(description="The checks that ran.")
    passed: bool
    problems: list[str] = Field(default_factory=list, description="What did not match, one line each.")
    retry: bool = Field(False, description="Failed, and the model is asked once more (told observation).")
    observation: str = Field("", description="What the model was told for its retry ('' for none).")
    note: str = Field("", description="Failed without a retry: why the answer stands anyway.")


class FinalAnswer(_Event):
    type: Literal["final_answer"] = "final_answer"
    answer: str
    steps: int
    duration_s: float
    tokens: int


class HarvestedTool(BaseModel):
    """One function the run defined and called, and what the harvest did with it."""

    model_config = ConfigDict(extra="forbid")

    function: str
    outcome: Literal["saved", "unchanged", "exists", "refused", "untested"] = Field(
        description="saved (a new tool), unchanged (a tool of that name has this source already), exists "
        "(a tool of that name has another source: not replaced), refused (its tests failed in a fresh "
        "session, or the name is not allowed), untested (no call whose value could become a test)."
    )
    version: int = Field(0, description="The saved tool's version (0: none saved).")
    tests: int = Field(0, description="Tests built from the run's calls (saved: the number that passed).")
    reason: str = Field("", description="Why it was not saved; empty when saved.")


class ToolsHarvested(_Event):
    """After the answer, before ``RunFinished``: the functions the run defined and called, and which were
    saved as tools of the tenant (``service.harvest_tools``). ``duration_s`` is the harvest's own time: it
    is not in ``FinalAnswer.duration_s`` (the answer came before) but is in ``RunFinished.duration_s``."""

    type: Literal["tools_harvested"] = "tools_harvested"
    tools: list[HarvestedTool]
    duration_s: float


class LimitReached(_Event):
    type: Literal["limit_reached"] = "limit_reached"
    limit: LimitName
    message: str = Field(description="Which limit, its value, and the setting that raises it.")
    steps: int
    duration_s: float
    tokens: int


class RunError(_Event):
    type: Literal["run_error"] = "run_error"
    code: str = Field(description="The ThinkboxError's stable code, e.g. model_unavailable.")
    message: str
    retryable: bool = False
    steps: int = 0
    duration_s: float = 0.0
    tokens: int = 0


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    run_id: str
    status: Literal["answered", "limit", "error", "cancelled"]
    answer: str | None = None
    steps: int
    duration_s: float
    tokens: int
    feedback: dict[str, int] = Field(
        default_factory=dict,
        description="How often the loop's feedback fired in the run: lint (code rejected), repeat, "
        "repeat_refused, docs, previewed (files); the critic's critic_passed, critic_retry, critic_fixed "
        "(passed after its retry), critic_stood (failed, stands), critic_kept (the retry hit a limit).",
    )


Event = Annotated[
    RunStarted
    | RunResumed
    | RouteChosen
    | PlanMade
    | PartTested
    | StepStarted
    | ThoughtDelta
    | ParseFailed
    | ActionParsed
    | CodeStarted
    | OutputChunk
    | DisplayProduced
    | ExecutionFinished
    | NetworkRequest
    | FilesPreviewed
    | CodeRejected
    | Notice
    | AnswerChecked
    | FinalAnswer
    | ToolsHarvested
    | LimitReached
    | RunError
    | RunFinished,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(line: str | bytes) -> Event:
    """One JSON line back to its event class."""
    return EVENT_ADAPTER.validate_json(line)
