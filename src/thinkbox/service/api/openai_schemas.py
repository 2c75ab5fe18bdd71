"""Bodies of the OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``), in OpenAI's shapes.

Requests accept fields they do not use (chat apps send sampling settings, tools, ``n``, ...): the agent
has its own settings, so they are ignored rather than refused. Messages are checked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thinkbox.service.conversations import Turn


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Lenient):
    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        """The text of the message (text parts joined; images and other parts left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, Any] | None = None

    def split(self) -> tuple[list[Turn], str] | None:
        """(the earlier user and assistant turns, the last user message's text); None without one."""
        turns = [Turn(m.role, m.text) for m in self.messages if m.role in ("user", "assistant")]
        last = max((i for i, t in enumerate(turns) if t.role == "user" and t.text.strip()), default=None)
        if last is None:
            return None
        return turns[:last], turns[last].text


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "thinkbox"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str = Field(description="The agent's thoughts, code and outputs (trimmed).")


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


def error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )


def openai_error(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body; a wrong key's code is ``invalid_api_key``, as OpenAI's own."""
    code = "invalid_api_key" if status == 401 else code
    detail = OpenAIErrorDetail(message=message, type=error_type(status), param=param, code=code)
    return OpenAIError(error=detail).model_dump()
