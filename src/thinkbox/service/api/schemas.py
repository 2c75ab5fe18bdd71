"""Request and response bodies of the API. Requests refuse unknown fields: a typo is an error."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from thinkbox.agent.events import NetworkRequest
from thinkbox.agent.loop import MAX_QUESTION_CHARS
from thinkbox.sandbox.types import ExecutionResult, Language

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Scope = Literal["user", "tenant"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, quota_exceeded.")
    message: str = Field(description="What went wrong and what to change.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    database: str = Field(description="sqlite or postgresql.")
    sandbox: str = Field(description="The sandbox backend's name.")
    model: str
    active_runs: int
    live_sessions: int


class Me(BaseModel):
    tenant: str
    user: str


class RunRequest(_Request):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="What to answer.")
    session_id: str | None = Field(
        None, max_length=64, description="Continue this session (follow-up): same variables, same history."
    )
    files: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Paths in your folder the question is about (they must exist); named to the model.",
    )
    route: Literal["code", "direct", "auto"] | None = Field(
        None,
        description="code: think in code; direct: one model call, no code; auto: the model decides "
        "(default: the service's agent.route). The run's route_chosen event says which was taken and why.",
    )


class RunCreated(BaseModel):
    id: str
    status: RunStatus
    session_id: str | None = None


class RunInfo(BaseModel):
    id: str
    status: RunStatus
    question: str
    answer: str | None
    error: str | None
    session_id: str | None
    files: list[str]
    steps: int
    tokens: int
    model: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_s: float | None = Field(description="From start to end (or to now while running).")
    events: int = Field(description="Events recorded so far (the last event id).")


class RunList(BaseModel):
    runs: list[RunInfo]
    next_offset: int | None = Field(description="Pass as ?offset= for the next page; null at the end.")


class SessionCreate(_Request):
    language: Language = Field(
        "py", description="What execute runs by default: py (Python), js (JavaScript, Node.js) or sh (bash)."
    )


class SessionCreated(BaseModel):
    id: str
    language: Language = "py"


class SessionInfo(BaseModel):
    id: str
    kind: str
    created_at: float
    last_activity_at: float
    closed_at: float | None
    close_reason: str | None
    live: bool = Field(description="Its interpreter is running now.")
    busy_with: str | None = Field(None, description="The run using it now.")


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class ExecuteRequest(_Request):
    code: str = Field(max_length=1_000_000, description="Code to run like a notebook cell.")
    timeout: float | None = Field(
        None, gt=0, le=600, description="Seconds before the code is interrupted (default: the sandbox limit)."
    )
    language: Language | None = Field(
        None,
        description=(
            "py, js or sh; default: the session's. A cell of another language runs in an interpreter of "
            "that language in the same sandbox, on the same files (its variables persist too)."
        ),
    )


class ExecuteResponse(ExecutionResult):
    warnings: list[str] = Field(default_factory=list, description="E.g. a storage quota is exceeded.")


class FileEntry(BaseModel):
    path: str
    size: int
    modified: float
    is_dir: bool


class FileList(BaseModel):
    scope: Scope
    files: list[FileEntry]
    used_bytes: int
    used_files: int
    quota_bytes: int
    quota_files: int


class NetworkLog(BaseModel):
    """``GET /v1/sessions/{id}/network``: the session's requests through the egress proxy."""

    requests: list[NetworkRequest]
