"""The tolerant parser: every repair path, and precise messages when nothing can be repaired."""

from __future__ import annotations

import json

import pytest

from thinkbox.agent.actions import Action, action_json_schema
from thinkbox.agent.parse import InvalidAction, ThoughtStream, parse_action

CLEAN = {"thought": "add", "action": "execute_code", "code": "print(1 + 1)", "final_answer": ""}


def test_clean_json_needs_no_repair() -> None:
    parsed = parse_action(json.dumps(CLEAN))
    assert parsed.action == Action(thought="add", action="execute_code", code="print(1 + 1)")
    assert parsed.repairs == ()


def test_json_in_a_code_fence_is_read() -> None:
    parsed = parse_action("```json\n" + json.dumps(CLEAN) + "\n```")
    assert parsed.action.code == "print(1 + 1)"
    assert "code fence around the JSON" in parsed.repairs


def test_text_around_the_json_is_ignored() -> None:
    parsed = parse_action("Sure! Here is my step:\n" + json.dumps(CLEAN) + "\nHope this helps.")
    assert parsed.action.code == "print(1 + 1)"
    assert "text around the JSON" in parsed.repairs


def test_raw_newlines_inside_strings_are_accepted() -> None:
    raw = '{"thought": "two lines", "action": "execute_code", "code": "x = 2\nprint(x)", "final_answer": ""}'
    assert parse_action(raw).action.code == "x = 2\nprint(x)"


def test_a_bare_python_block_runs_as_execute_code() -> None:
    parsed = parse_action("I will count the letters.\n```python\nprint('strawberry'.count('r'))\n```")
    assert parsed.action.action == "execute_code"
    assert parsed.action.code == "print('strawberry'.count('r'))"
    assert parsed.action.thought == "I will count the letters."
    assert parsed.repairs == ("a Python code block instead of JSON, run as execute_code",)


def test_a_python_block_with_braces_is_code_not_json() -> None:
    parsed = parse_action("```python\nd = {'a': 1}\nprint(d)\n```")
    assert parsed.action.code == "d = {'a': 1}\nprint(d)"


def test_python_triple_quoted_string_inside_json_is_repaired() -> None:
    raw = '{"thought": "t", "action": "execute_code", "code": """rate = 0.06\nprint(f"{rate:.2f}")"""}'
    parsed = parse_action(raw)
    assert parsed.action.code == 'rate = 0.06\nprint(f"{rate:.2f}")'
    assert "Python triple-quoted string inside the JSON" in parsed.repairs


def test_unescaped_quotes_inside_code_are_repaired() -> None:
    raw = '{"thought": "t", "action": "execute_code", "code": "print("hello")", "final_answer": ""}'
    parsed = parse_action(raw)
    assert parsed.action.code == 'print("hello")'
    assert "unescaped quotes inside a JSON string" in parsed.repairs


def test_a_python_dict_literal_is_accepted() -> None:
    parsed = parse_action("{'thought': 't', 'action': 'provide_answer', 'code': '', 'final_answer': '42'}")
    assert parsed.action.final_answer == "42"
    assert "a Python dict instead of JSON" in parsed.repairs


def test_trailing_comma_is_repaired() -> None:
    parsed = parse_action('{"action": "provide_answer", "final_answer": "3",}')
    assert parsed.action.final_answer == "3"
    assert "trailing comma" in parsed.repairs


def test_aliases_of_keys_and_actions_are_mapped() -> None:
    parsed = parse_action('{"thought": "t", "action": "answer", "answer": 442789883}')
    assert parsed.action.action == "provide_answer"
    assert parsed.action.final_answer == "442789883"
    assert any("answer" in r for r in parsed.repairs)


def test_a_guess_in_final_answer_while_coding_is_ignored() -> None:
    parsed = parse_action(json.dumps({**CLEAN, "final_answer": "maybe 3"}))
    assert parsed.action.runs_code
    assert json.loads(parsed.action.to_message())["final_answer"] == ""


def test_only_the_first_object_is_used_when_the_model_repeats_itself() -> None:
    answer = {"thought": "t", "action": "provide_answer", "code": "", "final_answer": "1"}
    parsed = parse_action(json.dumps(CLEAN) + "\n" + json.dumps(answer))
    assert parsed.action.action == "execute_code"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "the reply was empty"),
        ("The answer is 42.", "contains no JSON object"),
        ('{"thought": "t", "code": "print(1)"}', 'has no "action" key'),
        ('{"action": "run_it", "code": "print(1)"}', '"action" is "run_it"; it must be one of'),
        ('{"action": "execute_code", "code": ""}', '"execute_code" needs the Python to run in "code"'),
        (
            '{"action": "provide_answer", "final_answer": " "}',
            '"provide_answer" needs the answer in "final_answer"',
        ),
        ('{"thought": "t", "action": "execute_code", "code": "print(1)\\nfor i in ra', "cut off after"),
        ("[1, 2]", "no JSON object"),
        ('{"thought": t, action: 3', "cut off"),
        (
            '{"thought": "t", "action": execute_code, "code": "print(1)"}',
            "the JSON is invalid: Expecting value",
        ),
    ],
)
def test_unrepairable_replies_get_a_precise_message(reply: str, message: str) -> None:
    with pytest.raises(InvalidAction) as info:
        parse_action(reply)
    assert message in info.value.problem


def test_schema_forbids_a_guess_while_coding_and_code_when_answering() -> None:
    schema = action_json_schema()
    coding, answering = schema["anyOf"]
    assert coding["properties"]["final_answer"] == {"type": "string", "enum": [""]}
    assert answering["properties"]["code"] == {"type": "string", "enum": [""]}
    assert coding["properties"]["action"]["enum"] == ["execute_code", "debug_error"]
    assert list(coding["properties"]) == ["thought", "action", "code", "final_answer"]


def test_thought_streams_out_of_json_split_at_awkward_places() -> None:
    reply = json.dumps({**CLEAN, "thought": 'say "hi"\nthen é'})
    stream = ThoughtStream()
    pieces = [stream.feed(reply[i : i + 3]) for i in range(0, len(reply), 3)]
    assert "".join(pieces) == 'say "hi"\nthen é'


def test_thought_streams_out_of_prose_before_a_code_block() -> None:
    reply = "Count them.  \n```python\nprint(1)\n```"
    stream = ThoughtStream()
    assert "".join(stream.feed(ch) for ch in reply) == "Count them."
