"""Jump-forward decoding: the parts of a constrained JSON reply that no token choice can change.

Under the action schema a reply is ``{"thought": "…", "action": "…", "code": "…", "final_answer": "…"}``
with the keys in that order. Everything but the free strings is fixed once the model has picked the
action: the braces, the keys, ``"final_answer": ""`` while coding, ``"code": ""`` while answering, the
rest of ``execute_code`` once its first letter is out. Sampled one token at a time, that scaffolding is
about half of a short reply. :meth:`Scaffold.forced` says which text must follow what was generated so
far; the decoder appends its tokens in one batch (as fast as prompt tokens) instead of sampling them.

Only schemas of that shape get a scaffold (:meth:`Scaffold.from_schema`): an object, or ``anyOf``
objects with the same keys in the same order, every key required, every value a string that is either
free or one of an ``enum``. Anything else decodes token by token as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FREE = None
"""A value the model writes itself (``minLength`` is left to the grammar)."""


@dataclass(frozen=True)
class Scaffold:
    keys: tuple[str, ...]
    alternatives: tuple[tuple[tuple[str, ...] | None, ...], ...]
    """Per alternative, per key: the allowed values, or ``FREE``."""

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> Scaffold | None:
        variants = schema.get("anyOf", [schema])
        keys: tuple[str, ...] | None = None
        alternatives = []
        for variant in variants:
            props = variant.get("properties") if isinstance(variant, dict) else None
            if variant.get("type") != "object" or not isinstance(props, dict) or not props:
                return None
            if list(variant.get("required", [])) != list(props) or variant.get("additionalProperties", True):
                return None
            if keys is None:
                keys = tuple(props)
            elif tuple(props) != keys:
                return None
            values: list[tuple[str, ...] | None] = []
            for spec in props.values():
                if not isinstance(spec, dict) or spec.get("type") != "string":
                    return None
                if set(spec) - {"type", "enum", "minLength", "description", "title"}:
                    return None
                enum = spec.get("enum")
                if enum is not None and not all(isinstance(v, str) and _plain(v) for v in enum):
                    return None
                values.append(tuple(enum) if enum is not None else FREE)
            alternatives.append(tuple(values))
        if keys is None:
            return None
        return cls(keys, tuple(alternatives))

    def literal(self, k: int) -> str:
        """The fixed text before value ``k`` (``k == len(keys)``: after the last value)."""
        if k == len(self.keys):
            return '"}'
        return ('{"' if k == 0 else '", "') + f'{self.keys[k]}": "'

    def forced(self, text: str) -> tuple[str, bool]:
        """The text that must follow ``text`` (a prefix of a reply the grammar allows), and whether the
        reply is complete after it. ``("", False)`` where the model has a choice to make, or where the
        text leaves the canonical form read here (the decoder then just samples)."""
        alive = list(range(len(self.alternatives)))
        pos, n = 0, len(text)
        for k in range(len(self.keys) + 1):
            lit = self.literal(k)
            for i, ch in enumerate(lit):
                if pos >= n:  # the text ends inside the fixed part
                    return self._onward(lit[i:], k, alive)
                if ch == " " and text[pos] != " ":
                    continue  # an optional space the model left out
                if text[pos] != ch:
                    return "", False
                pos += 1
            if k == len(self.keys):
                return "", True
            start = pos
            while pos < n and text[pos] != '"':
                pos += 2 if text[pos] == "\\" else 1
            value = text[start:pos]
            choices = [self.alternatives[a][k] for a in alive]
            if pos >= n:  # the text ends inside value k
                if any(c is FREE for c in choices):
                    return "", False
                matching = sorted({v for c in choices if c is not None for v in c if v.startswith(value)})
                if len(matching) != 1:
                    return "", False
                alive = [a for a in alive if matching[0] in (self.alternatives[a][k] or ())]
                return self._onward(matching[0][len(value) :] + self.literal(k + 1), k + 1, alive)
            alive = [a for a in alive if _admits(self.alternatives[a][k], value)]
            if not alive:
                return "", False
        return "", True

    def closing(self, text: str) -> str:
        """What completes ``text`` when the model ended it: nothing (the grammar ends the object)."""
        return ""

    def _onward(self, head: str, k: int, alive: list[int]) -> tuple[str, bool]:
        """``head`` ends at the opening quote of value ``k`` (or closes the reply): add the values and
        literals that stay fixed from there."""
        parts = [head]
        while k < len(self.keys):
            choices = [self.alternatives[a][k] for a in alive]
            if any(c is FREE for c in choices):
                return "".join(parts), False
            allowed = {v for c in choices if c is not None for v in c}
            if len(allowed) != 1:
                return "".join(parts), False
            parts.append(allowed.pop() + self.literal(k + 1))
            k += 1
        return "".join(parts), True


def _admits(choice: tuple[str, ...] | None, value: str) -> bool:
    return choice is FREE or value in (choice or ())


def _plain(value: str) -> bool:
    """An enum value that needs no escaping in JSON."""
    return all(c not in '"\\' and ord(c) >= 0x20 for c in value)
