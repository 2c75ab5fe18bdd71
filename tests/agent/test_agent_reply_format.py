"""agent.reply_format: the JSON action with the code inside, or followed by the code in a fenced block.

Both forms parse into the same Action and the same events; the fenced form has its own schema (read by the
local model's grammar), system prompt, re-ask and history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_support import make_settings

from thinkbox.agent import reply_format
from thinkbox.agent.actions import Action
from thinkbox.agent.events import Event, ParseFailed, RunStarted, ThoughtDelta
from thinkbox.agent.loop import action_request, run_agent
from thinkbox.agent.parse import InvalidAction, ThoughtStream, parse_action
from thinkbox.agent.resume import recorded_state
from thinkbox.models.fenced import FENCE_KEY, is_fenced
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.session import Session

GCD = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\nprint(gcd(4862, 1309))"
HEAD = {"thought": "Write gcd.", "action": "execute_code", "final_answer": ""}


def fenced(code: str, head: dict[str, str] | None = None, tag: str = "python") -> str:
    return json.dumps(head or HEAD) + f"\n```{tag}\n{code}\n```"


# -- parsing both forms ---------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["json", "fenced"])
def test_both_forms_parse_into_the_same_action_whichever_was_asked_for(form: str) -> None:
    expected = Action(thought="Write gcd.", action="execute_code", code=GCD)
    as_json = parse_action(json.dumps({**HEAD, "code": GCD}), form)
    as_block = parse_action(fenced(GCD), form)
    assert as_json.action == as_block.action == expected
    assert as_json.repairs == as_block.repairs == ()


def test_an_answer_needs_no_block_in_either_form() -> None:
    reply = '{"thought": "The output is 187.", "action": "provide_answer", "final_answer": "187"}'
    for form in ("json", "fenced"):
        parsed = parse_action(reply, form)
        assert parsed.action.final_answer == "187" and parsed.repairs == ()


def test_when_code_is_in_both_places_the_form_asked_for_wins_and_the_repair_says_so() -> None:
    reply = json.dumps({**HEAD, "code": "print(1)"}) + "\n```python\nprint(2)\n```"
    from_block = parse_action(reply, "fenced")
    from_json = parse_action(reply, "json")
    assert from_block.action.code == "print(2)" and "the block was used" in from_block.repairs[0]
    assert from_json.action.code == "print(1)" and "the JSON's code was used" in from_json.repairs[0]
    same = json.dumps({**HEAD, "code": "print(2)"}) + "\n```python\nprint(2)\n```"
    assert parse_action(same, "fenced").repairs == ()


def test_indentation_and_blank_lines_of_the_block_are_kept() -> None:
    code = "for i in range(2):\n\n    print(i)\n"
    assert parse_action(fenced(code), "fenced").action.code == code.rstrip("\n")


def test_a_block_of_another_language_and_a_json_block_are_told_apart() -> None:
    js = parse_action(fenced("console.log(1)", tag="javascript"), "fenced")
    assert js.action.code == "console.log(1)"
    with pytest.raises(InvalidAction, match="no block"):  # ```text is not code
        parse_action(json.dumps(HEAD) + "\n```text\n42\n```", "fenced")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (json.dumps(HEAD) + "\n```python\nprint(1)\n", "the code block after the JSON is not closed"),
        (json.dumps(HEAD), 'action "execute_code" needs its code in a ``` block right after the JSON'),
        (json.dumps(HEAD) + "\n```python\n```", "needs its code in a ``` block"),
        ("```python\n```", "contains no JSON object"),
        ("```\n\n```", "contains no JSON object"),
    ],
)
def test_malformed_fenced_replies_get_a_precise_message(reply: str, message: str) -> None:
    with pytest.raises(InvalidAction) as info:
        parse_action(reply, "fenced")
    assert message in info.value.problem


def test_a_bare_code_block_without_json_still_runs_as_before() -> None:
    """The parser's older repair (prose and a code block, no JSON) is kept for endpoint models."""
    parsed = parse_action("```python\nprint(2)\n```", "fenced")
    assert parsed.action.code == "print(2)" and parsed.repairs


def test_the_thought_of_a_fenced_reply_streams_and_the_code_does_not() -> None:
    stream, text = ThoughtStream(), fenced(GCD, {**HEAD, "thought": 'Euclid\'s "gcd".'})
    shown = "".join(stream.feed(text[i : i + 5]) for i in range(0, len(text), 5))
    assert shown == 'Euclid\'s "gcd".'


# -- the form the model is asked for ----------------------------------------------------------------------
@pytest.mark.parametrize("language", ["py", "js", "sh", "auto"])
def test_rendering_then_parsing_gives_the_action_back(language: str) -> None:
    lang = None if language != "auto" else "js"
    actions = [
        Action(thought="t", action="execute_code", code="x = 1\nprint(x)", language=lang),  # type: ignore[arg-type]
        Action(thought="t", action="debug_error", code="  indented()", language=lang),  # type: ignore[arg-type]
        Action(thought="t", action="provide_answer", final_answer="42"),
    ]
    for action in actions:
        text = reply_format.render(action, "fenced", language)
        assert '"code"' not in text
        assert parse_action(text, "fenced").action == action
        assert parse_action(text, "fenced").repairs == ()


def test_the_fenced_schema_has_no_code_key_and_marks_each_coding_alternative_with_its_tag() -> None:
    schema = reply_format.action_schema("fenced", "py")
    coding, answering = schema["anyOf"]
    assert list(coding["properties"]) == ["thought", "action", "final_answer"] == coding["required"]
    assert coding[FENCE_KEY] == "python" and FENCE_KEY not in answering
    auto = reply_format.action_schema("fenced", "auto")
    tags = [(a["properties"]["language"]["enum"], a.get(FENCE_KEY)) for a in auto["anyOf"]]
    assert tags == [(["py"], "python"), (["js"], "javascript"), (["sh"], "bash"), ([""], None)]
    assert is_fenced(schema) and not is_fenced(reply_format.action_schema("json", "py"))


@pytest.mark.parametrize("language", ["py", "js", "sh", "auto"])
def test_the_fenced_system_prompt_shows_the_same_examples_in_the_fenced_form(language: str) -> None:
    as_json = reply_format.system_prompt([], language, "json")
    as_block = reply_format.system_prompt([], language, "fenced")
    assert '"code"' in as_json and '"code"' not in as_block
    assert "JSON strings" not in as_block and f"```{reply_format.fence_tag(language)}" in as_block

    def examples(prompt: str) -> list[str]:
        """Each worked example's action: from its JSON line to the next "User:" line."""
        blocks = prompt.split("\nUser: ")[1:]
        return [b[b.index('\n{"thought": "') + 1 :].strip() for b in blocks if '\n{"thought": "' in b]

    pairs = list(zip(examples(as_json), examples(as_block), strict=True))
    assert len(pairs) >= 3
    for json_text, fenced_text in pairs:  # the same action, in the other form, a clean fenced reply
        assert parse_action(fenced_text, "fenced").action == parse_action(json_text).action
        assert parse_action(fenced_text, "fenced").repairs == ()


def test_the_re_ask_describes_the_form_asked_for() -> None:
    assert '"code": "..."' in reply_format.reask("x", "json")
    message = reply_format.reask("x", "fenced", "js")
    assert "```javascript" in message and '"code"' not in message


def test_history_keeps_a_canonical_fenced_reply_verbatim() -> None:
    action = Action(thought="Write gcd.", action="execute_code", code=GCD)
    text = fenced(GCD)
    assert reply_format.history_text(text + "\n", action, (), "fenced", "py") == text
    compact = text.replace('", "', '","')
    assert reply_format.history_text(compact, action, (), "fenced", "py") == compact
    assert reply_format.history_text(text, action, ("a repair",), "fenced", "py") == text
    assert reply_format.history_text(json.dumps({**HEAD, "code": GCD}), action, (), "fenced", "py") == text


# -- the loop, end to end in a real sandbox ---------------------------------------------------------------
on_session_loop = pytest.mark.asyncio(loop_scope="session")


async def _run(session: Session, tmp_path: Path, form: str, replies: list[Any]) -> tuple[list[Event], Any]:
    settings = make_settings(tmp_path / form, reply_format=form)
    model = ScriptedModel(replies)
    events = [e async for e in run_agent("What is the gcd of 4862 and 1309?", model=model, session=session,
                                         settings=settings)]  # fmt: skip
    return events, model


def _comparable(events: list[Event]) -> list[dict[str, Any]]:
    drop = {"ts", "duration_s", "tokens", "run_id", "wall_s"}
    out = []
    for event in events:
        data = event.model_dump(mode="json", exclude=drop & set(type(event).model_fields))
        if isinstance(event, ThoughtDelta):
            continue  # the deltas' cut points follow the reply's characters, not the action
        if isinstance(event, RunStarted):
            data.pop("run_id", None)
        if "result" in data:
            data["result"].pop("duration_ms", None)
        out.append(data)
    return out


@on_session_loop
async def test_a_fenced_run_gives_the_same_events_as_a_json_run(session: Session, tmp_path: Path) -> None:
    answer = {"thought": "The output is 187.", "action": "provide_answer", "final_answer": "187"}
    json_events, _ = await _run(session, tmp_path, "json", [{**HEAD, "code": GCD}, {**answer, "code": ""}])
    await session.restart()
    fenced_events, model = await _run(session, tmp_path, "fenced", [fenced(GCD), json.dumps(answer)])
    assert _comparable(fenced_events) == _comparable(json_events)
    assert fenced_events[-1].answer == "187"  # type: ignore[union-attr]
    first, second = model.requests
    assert first.json_schema == reply_format.action_schema("fenced", "py")
    system = first.messages[0]["content"]
    assert system == reply_format.system_prompt([], "py", "fenced") and '"code"' not in system
    assert second.messages[2] == {"role": "assistant", "content": fenced(GCD)}  # its own reply, as written
    state = recorded_state(fenced_events, "fenced", "py")
    assert state.messages[1] == {"role": "assistant", "content": fenced(GCD)}  # a resumed run sees it too


@on_session_loop
async def test_a_fenced_reply_without_its_block_is_re_asked_in_the_fenced_words(
    session: Session, tmp_path: Path
) -> None:
    answer = {"thought": "done", "action": "provide_answer", "final_answer": "187"}
    events, model = await _run(
        session, tmp_path, "fenced", [json.dumps(HEAD), fenced(GCD), json.dumps(answer)]
    )
    failed = [e for e in events if isinstance(e, ParseFailed)]
    assert len(failed) == 1 and "needs its code in a ``` block" in failed[0].error
    reask = model.requests[1].messages[-1]["content"]
    assert "```python" in reask and '"code"' not in reask
    assert events[-1].answer == "187"  # type: ignore[union-attr]


def test_the_request_carries_the_fenced_schema(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, reply_format="fenced", language="js")
    schema = action_request([], settings).json_schema
    assert schema is not None and schema["anyOf"][0][FENCE_KEY] == "javascript"
