"""Bodies of the OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``), in OpenAI's shapes.

Requests accept sampling settings they do not use (chat apps send ``temperature``, ``max_tokens``, ...):
the agent has its own, so they are ignored, but checked against OpenAI's ranges. Fields whose neglect would
change what the client gets (``n`` > 1, ``tools``, a JSON ``response_format``, ``logprobs``, audio,
``stop``) are refused (:meth:`ChatRequest.unsupported`), as are content parts of unknown types.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thinkbox.service.conversations import Turn
from thinkbox.service.errors import ApiError, no_nul


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Lenient):
    """A part of a message's content; OpenAI's types are accepted, only text is read."""

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
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
    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def unsupported(self) -> tuple[str, str] | None:
        """(the field, why and what to do) for the first field asking what the agent cannot give; None."""
        extra = self.model_extra or {}
        if self.n is not None and self.n > 1:
            return "n", f"n={self.n}: the agent gives one answer per request; leave n out and send it again"
        for name in ("tools", "functions"):
            if extra.get(name):
                return name, f"{name}: the agent runs its own code, not the client's tools; leave {name} out"
        for name in ("tool_choice", "function_call"):
            if extra.get(name) not in (None, "none", "auto"):
                return name, f"{name}: the agent calls no client tools; leave {name} out"
        form = extra.get("response_format")
        if form is not None and (not isinstance(form, dict) or form.get("type") != "text"):
            return "response_format", (
                "response_format: the agent answers in text; ask for JSON in the message instead "
                "and leave response_format out"
            )
        if extra.get("logprobs") or extra.get("top_logprobs"):
            return "logprobs", "logprobs: the agent's answer has no log probabilities; leave logprobs out"
        modalities = extra.get("modalities")
        if extra.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
            return "modalities", "modalities: the agent answers in text only; leave modalities out, and audio"
        if extra.get("stop"):
            return "stop", "stop: the agent does not cut its answer at stop sequences; leave stop out"
        return None

    def split(self) -> tuple[list[Turn], str]:
        """(the earlier user and assistant turns, the last message's text); 400 naming the field at fault
        when the last message (system ones aside) is not a user message with text (nothing to answer), or
        a message holds what no database text keeps (NUL, a lone surrogate)."""
        talk = [(i, m) for i, m in enumerate(self.messages) if m.role not in ("system", "developer")]
        if not talk:
            raise _refuse("messages", "messages holds no user message: nothing to answer; add one")
        at, last = talk[-1]
        if last.role != "user":
            raise _refuse(
                f"messages[{at}].role",
                f"the last message is from the {last.role}: the agent answers the last message, which must "
                "be the user's; end messages with a user message",
            )
        if isinstance(last.content, list) and (seen := {p.type for p in last.content} - {"text"}):
            raise _refuse(
                f"messages[{at}].content",
                f"the agent cannot read {', '.join(sorted(seen))} parts; send text only (save a file with "
                "PUT /v1/files/{path} to ask about it by name)",
            )
        if not last.text.strip():
            raise _refuse(f"messages[{at}].content", "the last user message has no text: nothing to answer")
        for i, message in enumerate(self.messages):
            try:
                no_nul(f"messages[{i}]", message.text)
            except ApiError as exc:
                raise _refuse(f"messages[{i}].content", exc.message, "bad_question") from None
        turns = [Turn(m.role, m.text) for m in self.messages if m.role in ("user", "assistant")]
        return turns[:-1], turns[-1].text


def _refuse(param: str, message: str, code: str = "no_user_message") -> ApiError:
    return ApiError(400, code, message, param=param)


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
