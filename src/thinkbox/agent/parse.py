"""Turn a model's reply into an :class:`~thinkbox.agent.actions.Action`, tolerantly.

Models wrap JSON in code fences, add text around it, put raw newlines inside strings, write Python
triple-quoted strings or unescaped quotes inside JSON, or answer with a bare ```python block. Each of those
is repaired here, and the repair is named in :attr:`ParsedAction.repairs`. When nothing works,
:class:`InvalidAction` carries a precise sentence for the model saying what was wrong.

Both reply formats (agent.reply_format, :mod:`thinkbox.agent.reply_format`) are read whichever was asked
for: the code in the JSON's ``code`` string, or in a fenced block right after the JSON. When a reply has
both and they differ, the form that was asked for wins and the repair says so.

:class:`ThoughtStream` pulls the ``thought`` out of a reply while it is still streaming, for live display.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from thinkbox.agent.actions import ACTION_KINDS, CODE_ACTIONS, Action

KEYS = ("thought", "action", "code", "final_answer")
_KEY_ALIASES = {"answer": "final_answer", "python": "code", "reasoning": "thought", "thoughts": "thought"}
_ACTION_ALIASES = {
    "answer": "provide_answer",
    "final_answer": "provide_answer",
    "execute": "execute_code",
    "run_code": "execute_code",
    "python": "execute_code",
    "code": "execute_code",
    "debug": "debug_error",
}
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TRIPLE = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


class InvalidAction(Exception):
    """The reply is not a usable action. ``problem`` is a sentence written for the model."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class ParsedAction:
    action: Action
    repairs: tuple[str, ...] = ()
    """What had to be repaired, e.g. ``("code fence around the JSON",)``; empty for a clean reply."""


def parse_action(text: str, reply_format: str = "json") -> ParsedAction:
    """Parse one reply. Raises :class:`InvalidAction` with a message for the model.

    ``reply_format``: the form the model was asked for (json, fenced): it wins when a reply carries code
    both ways, and the messages about missing code name it."""
    raw = text.strip()
    if not raw:
        raise InvalidAction("the reply was empty")
    repairs: list[str] = []
    block = _python_block(raw)
    obj = _json_object(raw)
    if block is not None and (obj is None or obj[0] > block[0]):
        _, thought, code = block
        repairs.append("a Python code block instead of JSON, run as execute_code")
        return ParsedAction(
            _validate({"thought": thought, "action": "execute_code", "code": code}, repairs), tuple(repairs)
        )
    if obj is None:
        raise InvalidAction("the reply contains no JSON object (nothing between { and })")
    if raw.startswith("```"):
        repairs.append("code fence around the JSON")
    start, body, complete = obj
    if not complete:
        raise InvalidAction(
            f"the JSON object is not complete: it was cut off after {len(body)} characters "
            "(keep the code shorter, and close every string and the object)"
        )
    after = raw[start + len(body) :]
    if raw.startswith("```"):  # the fence around the JSON closes first
        after = re.sub(r"^\s*```[ \t]*(?=\n|$)", "", after, count=1)
    fenced_code, after = _block_after(after)
    if raw[:start].strip("` \n\tjson") or after.strip("` \n\t"):
        repairs.append("text around the JSON")
    data = _load(body, repairs)
    if fenced_code:
        data = _with_block(data, fenced_code, reply_format, repairs)
    elif reply_format == "fenced":
        _require_block(data)
    return ParsedAction(_validate(data, repairs), tuple(repairs))


# -- code in a fenced block after the JSON ----------------------------------------------------------------
_OPENER = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n")
_CLOSER = re.compile(r"(?<=\n)[ \t]*```")
_CODE_TAGS = ("", "python", "py", "python3", "javascript", "js", "node", "bash", "sh", "shell")


def _block_after(after: str) -> tuple[str | None, str]:
    """(the code of the fenced block in the text after the JSON, that text without the block).

    A block whose tag is not a code language (```json, ```text) is not code. Raises
    :class:`InvalidAction` for a block that is never closed: its code may be cut off."""
    opener = _OPENER.search(after)
    if opener is None or opener.group(1).lower() not in _CODE_TAGS:
        return None, after
    closer = _CLOSER.search(after, opener.end())
    if closer is None:
        raise InvalidAction(
            "the code block after the JSON is not closed: end the code with a line holding only ```"
        )
    code = after[opener.end() : closer.start()].strip("\n")
    return code, after[: opener.start()] + after[closer.end() :]


def _with_block(data: dict[str, Any], code: str, reply_format: str, repairs: list[str]) -> dict[str, Any]:
    """``data`` with the block's code as ``code`` (see the module's note on which form wins)."""
    inside = data.get("code")
    inside = inside if isinstance(inside, str) else ""
    if not inside.strip():
        return {**data, "code": code}
    if inside.strip() == code.strip():
        return data
    if reply_format == "fenced":
        repairs.append("code both in the JSON and in a block after it: the block was used")
        return {**data, "code": code}
    repairs.append("code both in the JSON and in a block after it: the JSON's code was used")
    return data


def _require_block(data: dict[str, Any]) -> None:
    """A fenced reply whose code action has no code at all gets a message in the fenced form's words."""
    action = str(data.get("action", "")).strip().lower()
    action = _ACTION_ALIASES.get(action, action) if action not in ACTION_KINDS else action
    code = data.get("code")
    if action in CODE_ACTIONS and not (isinstance(code, str) and code.strip()):
        raise InvalidAction(
            f'action "{action}" needs its code in a ``` block right after the JSON, but there is no block'
        )


# -- finding the JSON ---------------------------------------------------------------------------------
def _python_block(raw: str) -> tuple[int, str, str] | None:
    """(start, thought, code) of the first Python code block (prose before it is the thought)."""
    fence = _FENCE.search(raw)
    if fence is None or fence.group(1).lower() not in ("python", "py", "python3", ""):
        return None
    code = fence.group(2)
    if code.lstrip().startswith("{") or not code.strip():
        return None
    return fence.start(), raw[: fence.start()].strip(), code.strip("\n")


def _json_object(raw: str) -> tuple[int, str, bool] | None:
    """The first balanced ``{...}`` (string-aware): (start, text, complete)."""
    start = raw.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(raw)):
        ch = raw[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return start, raw[start : i + 1], True
    # Unbalanced: maybe the braces are unbalanced only because of bad quoting; let the repairs try.
    end = raw.rfind("}")
    if end > start and raw[end + 1 :].strip("` \n\t") == "":
        return start, raw[start : end + 1], True
    return start, raw[start:], False


def _load(body: str, repairs: list[str]) -> dict[str, Any]:
    """json.loads with raw newlines allowed, then increasingly forgiving repairs."""
    attempts: list[tuple[str, str]] = [("", body)]
    if _TRIPLE.search(body):
        attempts.append(("Python triple-quoted string inside the JSON", _TRIPLE.sub(_json_string, body)))
    if _TRAILING_COMMA.search(body):
        attempts.append(("trailing comma", _TRAILING_COMMA.sub(r"\1", body)))
    first_error: json.JSONDecodeError | None = None
    for note, candidate in attempts:
        try:
            value = json.loads(candidate, strict=False)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
            continue
        if note:
            repairs.append(note)
        return _as_dict(value)
    try:  # a Python dict literal: single quotes, True/None, triple-quoted strings
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    else:
        if isinstance(value, dict):
            repairs.append("a Python dict instead of JSON")
            return _as_dict(value)
    keyed = _split_by_keys(body)
    if keyed is not None:
        repairs.append("unescaped quotes inside a JSON string")
        return keyed
    assert first_error is not None
    raise InvalidAction(
        f"the JSON is invalid: {first_error.msg} at line {first_error.lineno} column {first_error.colno} "
        '(inside strings write \\" for a quote and \\n for a new line; do not use """ strings)'
    )


def _json_string(match: re.Match[str]) -> str:
    return json.dumps(match.group(2).strip("\n"))


def _split_by_keys(body: str) -> dict[str, Any] | None:
    """Last resort for strings with unescaped quotes: cut the object at the known keys."""
    names = "|".join(list(KEYS) + list(_KEY_ALIASES))
    key_re = re.compile(rf'"({names})"\s*:\s*')
    found = list(key_re.finditer(body))
    if not found or not any(m.group(1) in ("action", "code") for m in found):
        return None
    data: dict[str, Any] = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else body.rstrip().rfind("}")
        value = body[m.end() : end].strip().rstrip(",").strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            inner = value[1:-1]
            try:
                data[m.group(1)] = json.loads(f'"{inner}"', strict=False)
            except json.JSONDecodeError:
                data[m.group(1)] = inner.replace('\\"', '"').replace("\\n", "\n")
        else:
            try:
                data[m.group(1)] = json.loads(value)
            except json.JSONDecodeError:
                return None
    return data


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict):
        raise InvalidAction(f"the reply is JSON but not an object: it is a {type(value).__name__}")
    return value


# -- validating -----------------------------------------------------------------------------------------
def _validate(data: dict[str, Any], repairs: list[str]) -> Action:
    data = _normalise(data, repairs)
    try:
        return Action.model_validate(data)
    except ValidationError as exc:
        raise InvalidAction(_describe(exc, data)) from None


def _normalise(data: dict[str, Any], repairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _KEY_ALIASES.get(key, key)
        if name != key and name in data:
            continue  # both "answer" and "final_answer": keep the real one
        if name != key:
            repairs.append(f'key "{key}" read as "{name}"')
        if name in ("thought", "code", "final_answer"):
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = "\n".join(value)
            elif isinstance(value, bool | int | float):
                value = str(value)
            elif value is None:
                value = ""
        out[name] = value
    action = out.get("action")
    if isinstance(action, str):
        cleaned = action.strip().lower()
        if cleaned not in ACTION_KINDS and cleaned in _ACTION_ALIASES:
            repairs.append(f'action "{action}" read as "{_ACTION_ALIASES[cleaned]}"')
            cleaned = _ACTION_ALIASES[cleaned]
        out["action"] = cleaned
    return out


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    problems: list[str] = []
    choices = ", ".join(f'"{k}"' for k in ACTION_KINDS)
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing" and loc == "action":
            problems.append(f'the JSON has no "action" key; set "action" to one of {choices}')
        elif loc == "action":
            problems.append(f'"action" is {json.dumps(data.get("action"))}; it must be one of {choices}')
        elif err["type"] == "value_error":
            problems.append(str(err["ctx"].get("error", err["msg"])) if "ctx" in err else err["msg"])
        elif loc:
            problems.append(f'"{loc}" must be a string ({err["msg"]})')
        else:
            problems.append(err["msg"])
    return "; ".join(problems)


# -- streaming the thought ------------------------------------------------------------------------------
_THOUGHT_KEY = re.compile(r'"thought"\s*:\s*"')


class ThoughtStream:
    """Feed it the reply's text deltas; it returns the new part of the ``thought`` as it streams.

    For a JSON reply that is the decoded ``thought`` string; for a prose-and-code-block reply, the prose
    before the first code fence.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._pos = 0
        self._mode = "start"  # start -> json | prose -> done

    def feed(self, delta: str) -> str:
        self._buf += delta
        if self._mode == "start":
            head = self._buf.lstrip()
            if not head:
                return ""
            if head.startswith("{") or head.startswith("```json") or head.startswith("```JSON"):
                self._mode = "json"
            elif head.startswith("`") and len(head) < 7:
                return ""  # not yet known whether ```json or ```python
            else:
                self._mode = "prose"
                self._pos = len(self._buf) - len(head)
        if self._mode == "json":
            return self._json_thought()
        if self._mode == "prose":
            return self._prose()
        return ""

    def _json_thought(self) -> str:
        if self._pos == 0:
            match = _THOUGHT_KEY.search(self._buf)
            if match is None:
                return ""
            self._pos = match.end()
        out: list[str] = []
        i = self._pos
        while i < len(self._buf):
            ch = self._buf[i]
            if ch == '"':
                self._mode = "done"
                break
            if ch == "\\":
                need = 6 if self._buf[i + 1 : i + 2] == "u" else 2
                if i + need > len(self._buf):
                    break
                try:
                    out.append(json.loads(f'"{self._buf[i : i + need]}"'))
                except json.JSONDecodeError:
                    out.append(self._buf[i : i + need])
                i += need
                continue
            out.append(ch)
            i += 1
        self._pos = i
        return "".join(out)

    def _prose(self) -> str:
        fence = self._buf.find("```", self._pos)
        if fence >= 0:
            self._mode = "done"
            out, self._pos = self._buf[self._pos : fence].rstrip(), fence
            return out
        # Hold back a fence that may be starting, and trailing blanks (the prose may end there).
        end = len(self._buf) - 2
        while end > self._pos and self._buf[end - 1].isspace():
            end -= 1
        if end <= self._pos:
            return ""
        out, self._pos = self._buf[self._pos : end], end
        return out
