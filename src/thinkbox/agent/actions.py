"""What the model may do in one turn: the action schema.

Every reply of the model is one JSON object::

    {"thought": "...", "action": "execute_code" | "debug_error" | "provide_answer",
     "code": "...", "final_answer": "..."}

``code`` is required for ``execute_code`` and ``debug_error`` (``debug_error`` is ``execute_code`` after a
failure: the model says it is fixing something), ``final_answer`` for ``provide_answer``.

:func:`action_json_schema` is the schema handed to backends that can constrain decoding. It is the form that
worked best with the small local model (see ../shared/notes/local-model.md): while coding ``final_answer``
must be empty and when answering ``code`` must be empty, so the model never writes a guessed answer early
and later copies the guess instead of the computed value.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thinkbox.sandbox.types import LANGUAGE_ALIASES

ActionKind = Literal["execute_code", "debug_error", "provide_answer"]
ACTION_KINDS: tuple[str, ...] = ("execute_code", "debug_error", "provide_answer")
CODE_ACTIONS: tuple[str, ...] = ("execute_code", "debug_error")


class Action(BaseModel):
    """One validated model turn."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    thought: str = Field("", description="The model's reasoning for this step.")
    action: ActionKind
    code: str = Field("", description="Python to run in the session (execute_code, debug_error).")
    final_answer: str = Field("", description="The answer to the user's question (provide_answer).")
    language: Literal["py", "js", "sh"] | None = Field(
        None, description="The code's language (agent.language auto); None: the run's language."
    )

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: object) -> object:
        if value is None or value == "":
            return None
        return LANGUAGE_ALIASES.get(str(value).strip().lower(), value)  # "python", "javascript", "bash"

    @model_validator(mode="after")
    def _required_fields(self) -> Action:
        if self.action in CODE_ACTIONS and not self.code.strip():
            raise ValueError(f'action "{self.action}" needs the Python to run in "code", but "code" is empty')
        if self.action == "provide_answer" and not self.final_answer.strip():
            raise ValueError('action "provide_answer" needs the answer in "final_answer", but it is empty')
        return self

    @property
    def runs_code(self) -> bool:
        return self.action in CODE_ACTIONS

    def to_message(self) -> str:
        """The canonical JSON of this action, as it is kept in the history (one line, fields in order).

        The unused field is written empty, as the constrained schema demands, so the history shows the model
        exactly the form it must produce.
        """
        data: dict[str, str] = {"thought": self.thought, "action": self.action}
        if self.language is not None:  # only in runs where the model chooses (agent.language auto)
            data["language"] = self.language if self.runs_code else ""
        data["code"] = self.code if self.runs_code else ""
        data["final_answer"] = self.final_answer if not self.runs_code else ""
        return json.dumps(data, ensure_ascii=False)


def action_json_schema(choose_language: bool = False) -> dict[str, Any]:
    """JSON schema for constrained decoding (llama.cpp grammar, ``response_format`` json_schema).

    Two alternatives with the same four keys in the same order: coding (``final_answer`` must be ``""``)
    and answering (``code`` must be ``""``). ``choose_language`` (agent.language auto) adds a fifth key
    after ``action``, ``language``: py, js or sh when coding, ``""`` when answering; without it the schema
    is the one of a Python-only agent.
    """

    def variant(
        actions: list[str], code: dict[str, Any], answer: dict[str, Any], language: list[str]
    ) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "thought": {"type": "string"},
            "action": {"type": "string", "enum": actions},
        }
        if choose_language:
            properties["language"] = {"type": "string", "enum": language}
        properties.update(code=code, final_answer=answer)
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    empty: dict[str, Any] = {"type": "string", "enum": [""]}
    text: dict[str, Any] = {"type": "string", "minLength": 1}
    return {
        "title": "Action",
        "anyOf": [
            variant(list(CODE_ACTIONS), text, empty, ["py", "js", "sh"]),
            variant(["provide_answer"], empty, text, [""]),
        ],
    }
