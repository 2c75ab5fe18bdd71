"""A model that replays given replies: for tests of thinkbox and of your own integrations.

    model = ScriptedModel([
        {"thought": "compute", "action": "execute_code", "code": "print(6 * 7)", "final_answer": ""},
        {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "42"},
    ])

Replies are strings (sent as written, garbage included) or dicts (sent as JSON). They stream in small
deltas like a real model's. Every request is recorded in :attr:`ScriptedModel.requests`. Running out of
replies raises :class:`thinkbox.errors.ModelError` naming how many were given.

With ``by_step=True`` the reply depends on the conversation, not on the order of requests: a request
whose history holds N assistant messages gets reply ``N mod len(replies)``. One such model serves any
number of concurrent runs the same script (the service's load benchmark), and a resumed run gets the
reply its step would have got. A script file selects it as ``{"by_step": true, "replies": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from thinkbox.errors import ConfigError, ModelError
from thinkbox.models.base import ModelEvent, ModelReply, ModelRequest, TextDelta, Usage

Reply = str | dict[str, Any]


class ScriptedModel:
    """Replays ``replies`` in order, one per request."""

    def __init__(
        self,
        replies: Iterable[Reply],
        *,
        name: str = "scripted",
        chunk_chars: int | None = 8,
        delay_s: float = 0.0,
        by_step: bool = False,
    ) -> None:
        """``chunk_chars``: size of each streamed delta (None: the whole reply at once);
        ``delay_s``: pause before each delta, to imitate a slow model."""
        self.replies: list[str] = [r if isinstance(r, str) else json.dumps(r) for r in replies]
        self.name = name
        self.chunk_chars = chunk_chars
        self.delay_s = delay_s
        self.by_step = by_step
        if by_step and not self.replies:
            raise ConfigError("a by_step scripted model needs at least one reply")
        self.requests: list[ModelRequest] = []

    @classmethod
    def from_file(cls, path: Path | str, **options: Any) -> ScriptedModel:
        """A script file: a JSON list of replies (strings or objects), or JSON lines, one reply each."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the model script {str(path)!r} ({exc.strerror}); fix --script or "
                "THINKBOX_MODEL__SCRIPT"
            ) from None
        try:
            data = json.loads(text)
            if isinstance(data, dict) and isinstance(data.get("replies"), list):
                options = {"by_step": bool(data.get("by_step")), **options}
                data = data["replies"]
            replies = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            try:
                replies = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"the model script {str(path)!r} is neither a JSON list nor JSON lines "
                    f"(line {exc.lineno}: {exc.msg})"
                ) from None
        return cls(replies, name=f"scripted:{path.name}", **options)

    @property
    def remaining(self) -> int:
        return len(self.replies) - len(self.requests)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        index = len(self.requests)
        self.requests.append(request)
        if self.by_step:
            index = sum(m["role"] == "assistant" for m in request.messages) % len(self.replies)
        if index >= len(self.replies):
            raise ModelError(
                f"the scripted model ran out of replies: it was given {len(self.replies)} and was asked for "
                f"reply {index + 1}; add replies to the script"
            )
        text = self.replies[index]
        size = self.chunk_chars or max(len(text), 1)
        for start in range(0, len(text), size):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield TextDelta(text[start : start + size])
        prompt_chars = sum(len(m["content"]) for m in request.messages)
        usage = Usage(_estimate_tokens(prompt_chars), _estimate_tokens(len(text)))
        yield ModelReply(text=text, usage=usage, finish_reason="stop", constrained=False)


def _estimate_tokens(chars: int) -> int:
    """About four characters per token, as for English text with common tokenizers."""
    return (chars + 3) // 4
