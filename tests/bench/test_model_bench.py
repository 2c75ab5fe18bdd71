"""Scoring of ``thinkbox bench model``: a numeric match in the final answer."""

from __future__ import annotations

import pytest

from thinkbox.bench.model import QUESTIONS, is_correct, numbers_in

BY_KEY = {q.key: q for q in QUESTIONS}


def test_numbers_are_read_with_thousands_separators() -> None:
    assert numbers_in("The product is 442,789,883 and -2.5 remains") == [442789883.0, -2.5]


@pytest.mark.parametrize(
    ("key", "answer", "correct"),
    [
        ("multiply", "48271 * 9173 = 442789883", True),
        ("multiply", "442,789,883", True),
        ("multiply", "about 442789880", False),
        ("compound_interest", "The interest earned is $6,386.41.", True),
        ("compound_interest", "You end with 21386.41", False),
        ("strawberry", 'There are 3 "r"s in strawberry.', True),
        ("strawberry", "2", False),
        ("shortest_path", "The shortest path A-C-B-D-E has length 11.", True),
    ],
)
def test_answers_are_scored_by_the_expected_number(key: str, answer: str, correct: bool) -> None:
    assert is_correct(answer, BY_KEY[key]) is correct
