"""A chat: several questions answered in the same sandbox session with one growing history.

Variables defined while answering one question are there for the next, and the model sees the earlier
questions, its code and the results. The conversation does not own the session or the model: whoever
created them closes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from thinkbox.agent.events import Event, FinalAnswer
from thinkbox.agent.route import run_routed
from thinkbox.config import Settings
from thinkbox.models.base import Message, ModelBackend
from thinkbox.sandbox.session import Session


class Conversation:
    def __init__(self, *, model: ModelBackend, session: Session, settings: Settings) -> None:
        self.model = model
        self.session = session
        self.settings = settings
        self.history: list[Message] = []
        self.answers: list[str | None] = []

    async def ask(self, question: str, *, run_id: str | None = None) -> AsyncIterator[Event]:
        """Answer the next question; yields the run's events (see :func:`run_routed`: by ``agent.route``)."""
        answer: str | None = None
        async for event in run_routed(
            question,
            model=self.model,
            session=self.session,
            settings=self.settings,
            history=self.history,
            run_id=run_id,
        ):
            if isinstance(event, FinalAnswer):
                answer = event.answer
            yield event
        self.answers.append(answer)

    @property
    def turns(self) -> int:
        """Questions asked so far."""
        return len(self.answers)
