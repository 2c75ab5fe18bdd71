"""The thinking-in-code agent.

    async for event in run_agent(question, model=model, session=session, settings=settings):
        ...

:func:`run_agent` is the CodeAct loop (one question); :class:`Conversation` keeps one session and one
history across questions. Events are in :mod:`thinkbox.agent.events`, the action schema in
:mod:`thinkbox.agent.actions`, the tolerant parser in :mod:`thinkbox.agent.parse`, every word said to the
model in :mod:`thinkbox.agent.prompts`.
"""

from thinkbox.agent.actions import Action, action_json_schema
from thinkbox.agent.conversation import Conversation
from thinkbox.agent.loop import MAX_QUESTION_CHARS, check_question, run_agent

__all__ = [
    "MAX_QUESTION_CHARS",
    "Action",
    "Conversation",
    "action_json_schema",
    "check_question",
    "run_agent",
]
