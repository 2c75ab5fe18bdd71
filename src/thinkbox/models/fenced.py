"""Replies that are a JSON object followed by a fenced code block: the grammar and the jump-forward scaffold.

A JSON schema alternative (the schema itself, or one of its ``anyOf``) that carries the key
:data:`FENCE_KEY` with a language tag (``"x-fence": "python"``) describes a reply made of that object and,
right after it, a block::

    {"thought": "...", "action": "execute_code", "final_answer": ""}
    ```python
    print(6 * 7)
    ```

The code inside is plain text: no JSON escaping, real new lines and indentation, which small models write
far more reliably than code squeezed into a JSON string. The local model enforces the form with a GBNF
grammar (:func:`fenced_gbnf`); endpoints cannot constrain text after JSON, so they get no response format
for such a schema (:func:`is_fenced`) and the agent's parser reads the reply tolerantly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from thinkbox.models.scaffold import Scaffold

FENCE_KEY = "x-fence"
"""Key of a schema alternative: the language tag of the fenced block that follows the object."""

_BODY_RULES = r"""
fence-body ::= fence-first fence-line*
fence-first ::= fence-text "\n"
fence-line ::= fence-text? "\n"
fence-text ::= [^`\n] [^\n]*
"""
"""The block's content: at least one non-empty line; no line starts with a backtick, so that a backtick at
the start of a line can only be the closing fence (a model that wants to write ```\n there, which the
grammar forbids, must pick ``` itself, not `` and go on writing)."""


def alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object alternatives of ``schema``: its ``anyOf``, or the schema itself."""
    found = schema.get("anyOf", [schema])
    return [a for a in found if isinstance(a, dict)]


def fences(schema: dict[str, Any] | None) -> list[str | None]:
    """Per alternative, the tag of the block that follows it (None: nothing follows)."""
    if schema is None:
        return []
    return [a.get(FENCE_KEY) if isinstance(a.get(FENCE_KEY), str) else None for a in alternatives(schema)]


def is_fenced(schema: dict[str, Any] | None) -> bool:
    """Whether a reply under ``schema`` may continue after its JSON object (so it is not JSON)."""
    return any(tag is not None for tag in fences(schema))


def plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without the fence keys: the JSON object part alone."""
    if "anyOf" not in schema:
        return {k: v for k, v in schema.items() if k != FENCE_KEY}
    return {**schema, "anyOf": [{k: v for k, v in a.items() if k != FENCE_KEY} for a in schema["anyOf"]]}


CLOSER = "```"


def opener(tag: str) -> str:
    """The text between the object's closing brace and the first line of code."""
    return f"\n```{tag}\n"


def fenced_gbnf(object_gbnf: str, schema: dict[str, Any]) -> str:
    """The grammar of a fenced reply, from the grammar llama-cpp-python compiled for ``plain_schema``.

    Its converter names the alternatives of an ``anyOf`` ``alternative-0``, ``alternative-1``, ... and
    joins them in ``root``; a single object is ``root`` itself. The root is rewritten so each alternative
    with a fence is followed by its block. The reply may end at the start of any line of the block
    without the closing fence (the model's end-of-text token there ends the code; the decoder then adds
    the fence, :meth:`FencedScaffold.closing`): otherwise a model that wants to stop, and may not,
    writes blank lines until its token limit.
    """
    tags = fences(schema)
    lines = object_gbnf.strip().splitlines()
    root = [i for i, line in enumerate(lines) if line.startswith("root ::= ")]
    if len(root) != 1:
        raise ValueError("the compiled grammar has no single root rule")
    if "anyOf" in schema:
        expected = "root ::= " + " | ".join(f"alternative-{i}" for i in range(len(tags)))
        if lines[root[0]] != expected:
            raise ValueError(f"unexpected root rule {lines[root[0]]!r} (expected {expected!r})")
        names = [f"alternative-{i}" for i in range(len(tags))]
    else:
        lines[root[0]] = lines[root[0]].replace("root ::= ", "reply-object ::= ", 1)
        names = ["reply-object"]
    parts, rules = [], []
    for i, (name, tag) in enumerate(zip(names, tags, strict=True)):
        if tag is None:
            parts.append(name)
            continue
        parts.append(f"{name} fence-{i}")
        rules.append(f"fence-{i} ::= {json.dumps(opener(tag))} fence-body {json.dumps(CLOSER)}?")
    if "anyOf" in schema:
        del lines[root[0]]
    return "\n".join([f"root ::= {' | '.join(parts)}", *lines, *rules]) + "\n" + _BODY_RULES.lstrip()


@dataclass(frozen=True)
class FencedScaffold:
    """Jump-forward decoding for a fenced reply: the object's scaffold (:class:`Scaffold`), then the
    block's opening line, forced as soon as the object is complete; the reply is complete when a line
    holds only the closing backticks."""

    object: Scaffold
    schema: dict[str, Any]

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> FencedScaffold | None:
        inner = Scaffold.from_schema(plain_schema(schema))
        return cls(inner, schema) if inner is not None else None

    def forced(self, text: str) -> tuple[str, bool]:
        end = _object_end(text)
        if end is None:
            forced, complete = self.object.forced(text)
            if not complete:
                return forced, False
            end = _object_end(text + forced)
            if end is None:
                return forced, False
            tag = self._tag((text + forced)[:end])
            return (forced + opener(tag), False) if tag is not None else (forced, True)
        tag = self._tag(text[:end])
        if tag is None:
            return "", True
        tail, head = text[end:], opener(tag)
        if tail.startswith(" "):
            tail = tail[1:]  # the grammar's optional space after the brace
        if head.startswith(tail):
            return head[len(tail) :], False
        if tail.startswith(head) and len(tail) > len(head) and tail.endswith("\n" + CLOSER):
            return "", True
        return "", False

    def closing(self, text: str) -> str:
        """What completes ``text`` when the model ended it: the closing fence if a block is open."""
        end = _object_end(text)
        if end is None or self._tag(text[:end]) is None:
            return ""
        tail = text[end:]
        return "" if tail.endswith("\n" + CLOSER) else CLOSER

    def _tag(self, body: str) -> str | None:
        """The fence tag of the alternative the finished object ``body`` matches (None: no block)."""
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        tags = {
            tag
            for alternative, tag in zip(alternatives(self.schema), fences(self.schema), strict=True)
            if _matches(alternative, value)
        }
        return tags.pop() if len(tags) == 1 else None


def _matches(alternative: dict[str, Any], value: dict[str, Any]) -> bool:
    for key, spec in alternative.get("properties", {}).items():
        enum = spec.get("enum") if isinstance(spec, dict) else None
        if enum is not None and value.get(key) not in enum:
            return False
    return True


def _object_end(text: str) -> int | None:
    """Where the leading JSON object of ``text`` ends (the index after its brace), None while open."""
    start = len(text) - len(text.lstrip())
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return end
