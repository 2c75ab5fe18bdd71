"""How the model writes a step (agent.reply_format): one JSON object, or JSON then a fenced code block.

``json`` (the original form) carries the code inside the JSON string::

    {"thought": "...", "action": "execute_code", "code": "def f(x):\\n    return x", "final_answer": ""}

``fenced`` leaves ``code`` out of the object and writes the code as plain text right after it::

    {"thought": "...", "action": "execute_code", "final_answer": ""}
    ```python
    def f(x):
        return x
    ```

A small model squeezing a function into a JSON string tends to write it on one line and get a SyntaxError;
in a block it writes new lines and indentation as in any file. Both forms parse into the same
:class:`~thinkbox.agent.actions.Action` and the same events, so nothing after the parser changes.

This module holds what differs per format: the schema sent to the model backend (a fenced schema tells
the local model's grammar to expect the block, see :mod:`thinkbox.models.fenced`), the system prompt
(the same prompt, its format paragraph and worked examples rewritten in the fenced form), the re-ask,
and how the model's own earlier actions appear in its history (in the form it is asked to write).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from thinkbox.agent import prompts
from thinkbox.agent.actions import Action, action_json_schema
from thinkbox.models.fenced import FENCE_KEY, opener
from thinkbox.sandbox.types import FileInfo

ReplyFormat = Literal["json", "fenced"]
FENCE_TAGS = {"py": "python", "js": "javascript", "sh": "bash"}
"""A code language -> the tag of its fenced block."""

FENCED_TEMPLATE = (
    '{"thought": "...", "action": "execute_code", "final_answer": ""} followed by the code in a '
    "```{tag} block closed by ```, or "
    '{"thought": "...", "action": "provide_answer", "final_answer": "..."} alone'
)


def fence_tag(language: str) -> str:
    """The block's tag for agent.language (auto: Python's, the form shown in the template)."""
    return FENCE_TAGS.get(language, "python")


def action_schema(reply_format: str, language: str = "py") -> dict[str, Any]:
    """The schema of one reply: :func:`action_json_schema`, or in ``fenced`` the same alternatives
    without ``code``, each coding alternative marked with its block's tag (one per language in auto)."""
    schema = action_json_schema(language == "auto")
    if reply_format == "json":
        return schema
    coding, answering = schema["anyOf"]

    def without_code(variant: dict[str, Any], tag: str | None, lang: str | None) -> dict[str, Any]:
        properties = {k: v for k, v in variant["properties"].items() if k != "code"}
        if lang is not None:
            properties["language"] = {"type": "string", "enum": [lang]}
        out = {**variant, "properties": properties, "required": list(properties)}
        return {**out, FENCE_KEY: tag} if tag is not None else out

    if language == "auto":
        variants = [without_code(coding, tag, lang) for lang, tag in FENCE_TAGS.items()]
    else:
        variants = [without_code(coding, fence_tag(language), None)]
    return {**schema, "anyOf": [*variants, without_code(answering, None, None)]}


def render(action: Action, reply_format: str, language: str = "py") -> str:
    """``action`` as the model is asked to write it (how its earlier actions appear in its history)."""
    if reply_format == "json":
        return action.to_message()
    data: dict[str, str] = {"thought": action.thought, "action": action.action}
    if action.language is not None or language == "auto":
        data["language"] = (action.language or "py") if action.runs_code else ""
    data["final_answer"] = "" if action.runs_code else action.final_answer
    head = json.dumps(data, ensure_ascii=False)
    if not action.runs_code:
        return head
    tag = fence_tag(action.language or language)
    return f"{head}{opener(tag)}{action.code.strip(chr(10))}\n```"


def history_text(text: str, action: Action, repairs: Sequence[str], reply_format: str, language: str) -> str:
    """The reply as written when it already is the canonical form of ``action`` (a local model's KV
    cache then matches the history token for token); else the canonical form, so a repaired reply or a
    guessed ``final_answer`` written while coding is not shown back to the model."""
    canonical = render(action, reply_format, language)
    if not repairs and _split(text) == _split(canonical):
        return text.strip()
    return canonical


def _split(text: str) -> tuple[Any, str] | None:
    """(the leading JSON object, the text after it) of a reply; None when it does not start with one."""
    text = text.strip()
    try:
        value, end = json.JSONDecoder(strict=False).raw_decode(text)
    except json.JSONDecodeError:
        return None
    return value, text[end:].strip()


def reask(problem: str, reply_format: str, language: str = "py") -> str:
    """The user message after a reply that was not a valid action."""
    if reply_format == "json":
        return prompts.reask(problem)
    template = FENCED_TEMPLATE.replace("{tag}", fence_tag(language))
    return f"Your reply could not be used: {problem}. Reply in this form:\n{template}"


def system_prompt(
    files: Sequence[FileInfo] = (),
    language: str = "py",
    reply_format: str = "json",
    extra: str = "",
    **options: Any,
) -> str:
    """:func:`thinkbox.agent.prompts.system_prompt` in the reply format asked for (``options``: its
    other keyword arguments).

    The fenced prompt is the JSON prompt with its format paragraph and its rule about JSON strings
    replaced, and each worked example rewritten by :func:`render`: the same words and examples, so that
    the two formats are compared on the format alone.
    """
    text = prompts.system_prompt(files, language, extra, **options)
    if reply_format == "json":
        return text
    return fenced_prompt(text, language)


_FORMAT_PARAGRAPH = re.compile(
    r'Reply with ONE JSON object and nothing else:\n\{.*?\}\n(?:- "[a-z_]+": .*\n)+', re.MULTILINE
)
_JSON_RULE = re.compile(r"^(\d+)\. In JSON strings write .*$", re.MULTILINE)


def fenced_prompt(text: str, language: str) -> str:
    """The JSON system prompt ``text`` rewritten for the fenced format (see :func:`system_prompt`)."""
    tag = fence_tag(language)
    auto = language == "auto"
    paragraph = (
        f"Reply with ONE JSON object; when you run code, put the code right after it in a ```{tag} block:\n"
        + '{"thought": "...", "action": "execute_code",'
        + (' "language": "py",' if auto else "")
        + f' "final_answer": ""}}\n```{tag}\n...\n```\n'
        + '- "execute_code": run the code of the block and see its output. Keep "final_answer" empty.\n'
        + '- "debug_error": the same, to fix the error of the last step.\n'
        + '- "provide_answer": give "final_answer", with no block after the JSON.\n'
        + (
            '- "language": "py", "js" or "sh": the language of the block (```python, ```javascript, '
            '```bash); "" when answering.\n'
            if auto
            else ""
        )
    )
    text, found = _FORMAT_PARAGRAPH.subn(lambda _: paragraph, text, count=1)
    text, rules = _JSON_RULE.subn(
        lambda m: (
            f"{m.group(1)}. Write the code in the block as in a file: one statement per line, real "
            "indentation, no escaping."
        ),
        text,
        count=1,
    )
    if not found or not rules:
        raise ValueError("the system prompt's reply format paragraph or JSON rule was not found")
    return "\n".join(_example(line, language) for line in text.split("\n"))


def _example(line: str, language: str) -> str:
    """A worked example's action line in the fenced form; any other line as it is."""
    if not line.startswith('{"thought"') or '"code": ' not in line:
        return line  # the JSON prompt's examples carry "code"; the fenced template above does not
    return render(Action.model_validate(json.loads(line)), "fenced", language)
