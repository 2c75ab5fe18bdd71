"""The model backend family: one method, :meth:`ModelBackend.stream`.

A backend turns a chat (a list of messages) into a stream of text deltas followed by exactly one
:class:`ModelReply`. Built-in and third-party backends register the same way (see ``thinkbox.models``).
Failures are translated into :mod:`thinkbox.errors` ``ModelError`` subclasses at the backend boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelRequest:
    messages: list[Message]
    json_schema: dict[str, Any] | None = None
    """Constrain the reply to this JSON schema where the backend can (grammar / response_format). An
    alternative with the key ``x-fence`` is followed by a fenced code block (see thinkbox.models.fenced)."""
    max_tokens: int = 1024
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    """Sampling seed where the backend takes one; None: random. (The local model repeats a reply for the
    same seed and prompt from the same KV-cache state; a reused cache can change the last bits.)"""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ModelReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    constrained: bool = False
    """True when the backend enforced ``json_schema`` while decoding."""


ModelEvent = TextDelta | ModelReply


@runtime_checkable
class ModelBackend(Protocol):
    """Anything that can answer a chat. ``name`` is shown to users (e.g. ``openai:gpt-4o-mini``)."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield :class:`TextDelta` pieces as they are generated, then exactly one :class:`ModelReply`."""
        ...


async def complete(model: ModelBackend, request: ModelRequest) -> ModelReply:
    """Convenience: run :meth:`ModelBackend.stream` to the end and return the reply."""
    reply: ModelReply | None = None
    async for event in model.stream(request):
        if isinstance(event, ModelReply):
            reply = event
    if reply is None:
        from thinkbox.errors import ModelError

        raise ModelError(f"model backend {model.name!r} ended its stream without a reply")
    return reply
