"""Jump-forward decoding: which text the action schema fixes, given what the model wrote so far."""

from __future__ import annotations

import json

import pytest

from thinkbox.agent.actions import Action, action_json_schema
from thinkbox.models.scaffold import Scaffold


@pytest.fixture(scope="module")
def scaffold() -> Scaffold:
    s = Scaffold.from_schema(action_json_schema())
    assert s is not None
    return s


def test_reply_opens_with_the_first_key(scaffold: Scaffold) -> None:
    assert scaffold.forced("") == ('{"thought": "', False)
    assert scaffold.forced("{") == ('"thought": "', False)


def test_free_strings_are_left_to_the_model(scaffold: Scaffold) -> None:
    assert scaffold.forced('{"thought": "I will multiply') == ("", False)
    assert scaffold.forced('{"thought": "say \\"hi') == ("", False)  # an escaped quote does not close it


def test_closing_the_thought_fixes_the_next_key(scaffold: Scaffold) -> None:
    assert scaffold.forced('{"thought": "x"') == (', "action": "', False)
    assert scaffold.forced('{"thought": "x",') == (' "action": "', False)


def test_first_letter_of_the_action_fixes_the_rest_of_the_reply_shape(scaffold: Scaffold) -> None:
    start = '{"thought": "x", "action": "'
    assert scaffold.forced(start) == ("", False)  # three actions to choose from
    assert scaffold.forced(start + "e") == ('xecute_code", "code": "', False)
    assert scaffold.forced(start + "d") == ('ebug_error", "code": "', False)
    assert scaffold.forced(start + "p") == ('rovide_answer", "code": "", "final_answer": "', False)


def test_closing_the_code_completes_the_reply(scaffold: Scaffold) -> None:
    text = '{"thought": "x", "action": "execute_code", "code": "print(6 * 7)"'
    forced, complete = scaffold.forced(text)
    assert (forced, complete) == (', "final_answer": ""}', True)
    assert Action.model_validate_json(text + forced).code == "print(6 * 7)"


def test_closing_the_answer_completes_the_reply(scaffold: Scaffold) -> None:
    text = '{"thought": "x", "action": "provide_answer", "code": "", "final_answer": "42"'
    assert scaffold.forced(text) == ("}", True)
    assert scaffold.forced(text + "}") == ("", True)


def test_text_off_the_canonical_form_is_never_forced(scaffold: Scaffold) -> None:
    assert scaffold.forced('{ "thought"') == ("", False)
    assert scaffold.forced('{"thought": "x"\n') == ("", False)


def test_spaces_the_model_leaves_out_are_accepted(scaffold: Scaffold) -> None:
    assert scaffold.forced('{"thought":"x","action":"p') == (
        'rovide_answer", "code": "", "final_answer": "',
        False,
    )


def test_every_forced_reply_is_valid_json_of_the_schema(scaffold: Scaffold) -> None:
    """Walk a reply, taking what is forced and writing the free parts: the result parses as an Action."""
    for first_letter, free in (("e", ["ok", "print(1)"]), ("p", ["ok", "7"])):
        text, values = "", iter(free)
        for _ in range(12):
            forced, complete = scaffold.forced(text)
            text += forced
            if complete:
                break
            if text.endswith('"action": "'):
                text += first_letter
            elif not forced or text.endswith('"'):
                text += next(values) + '"'
        assert json.loads(text)["action"].startswith(first_letter)
        Action.model_validate_json(text)


CLOSED = {"additionalProperties": False}


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": [],
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"type": "array", "items": {"type": "string"}},
    ],
)
def test_other_schemas_get_no_scaffold(schema: dict[str, object]) -> None:
    assert Scaffold.from_schema(schema) is None
