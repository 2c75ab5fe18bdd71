"""Chat conversations of the OpenAI-compatible API, each kept in one sandbox session of its user.

A chat client sends the whole conversation with every request; the service keeps the conversation's
state (variables, imports, the agent's history) in one session, found again by a *conversation key*:

1. the request's ``user`` field, when given (one session per end user of a chat app);
2. else ``metadata["conversation_id"]``;
3. else the header ``X-Thinkbox-Conversation``;
4. else a hash of the earlier messages (user and assistant texts): the answer of turn *n* is registered
   under the hash of the conversation up to it, which is what turn *n + 1* sends as its earlier messages.
   A client that edits or regenerates an earlier message gets a new session.

The mapping lives in memory, per user (keys of one user never reach another's sessions): it is lost when
the server restarts, and a conversation then goes on in a new session, with its earlier messages given to
the agent as context (their variables are gone). It keeps at most :data:`MAX_ENTRIES` keys, oldest
dropped first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from thinkbox.agent.actions import Action
from thinkbox.agent.reply_format import render
from thinkbox.models.base import Message

MAX_ENTRIES = 50_000
CONTEXT_TURNS = 20
CONTEXT_CHARS = 4_000


@dataclass(frozen=True)
class Turn:
    role: str  # user or assistant
    text: str


def history_hash(turns: Sequence[Turn]) -> str:
    """The key of a conversation that has had ``turns`` (system messages and tool calls left out)."""
    data = json.dumps([[t.role, t.text.strip()] for t in turns], ensure_ascii=False)
    return "hash:" + hashlib.sha256(data.encode()).hexdigest()


def context_messages(turns: Sequence[Turn], reply_format: str = "json") -> list[Message]:
    """Earlier turns as the agent's history would hold them: user texts, and each answer as the
    ``provide_answer`` action the model writes in ``reply_format`` (the last :data:`CONTEXT_TURNS`, each
    trimmed)."""
    messages: list[Message] = []
    for turn in turns[-CONTEXT_TURNS:]:
        text = turn.text.strip()[:CONTEXT_CHARS]
        if not text:
            continue
        if turn.role == "user":
            messages.append({"role": "user", "content": text})
        else:
            answer = Action(thought="my earlier answer", action="provide_answer", final_answer=text)
            messages.append({"role": "assistant", "content": render(answer, reply_format)})
    if messages and messages[-1]["role"] == "user":  # the question must follow an answer, not merge in
        messages.append(
            {
                "role": "assistant",
                "content": render(
                    Action(thought="(no answer was recorded)", action="provide_answer", final_answer="-"),
                    reply_format,
                ),
            }
        )
    return messages


@dataclass
class Conversations:
    """conversation key -> session id, per user id; and the clean-ups that outlive their request."""

    _sessions: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def session_for(self, user_id: str, key: str) -> str | None:
        session_id = self._sessions.get((user_id, key))
        if session_id is not None:
            self._sessions.move_to_end((user_id, key))
        return session_id

    def remember(self, user_id: str, key: str, session_id: str) -> None:
        self._sessions[(user_id, key)] = session_id
        self._sessions.move_to_end((user_id, key))
        while len(self._sessions) > MAX_ENTRIES:
            self._sessions.popitem(last=False)

    def forget(self, user_id: str, key: str) -> None:
        self._sessions.pop((user_id, key), None)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` (e.g. cancelling the run of a client that went away) past its request's end."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a run that ended meanwhile answers 409, which is fine
