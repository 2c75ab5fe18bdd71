"""The critic's rules without a model: which numbers an answer may hold, which examples a question shows."""

from __future__ import annotations

import pytest
from rich.console import Console

from thinkbox.agent.critic import examples, unsupported_numbers
from thinkbox.agent.events import AnswerChecked
from thinkbox.cli.render import Renderer
from thinkbox.config import AgentSettings


@pytest.mark.parametrize(
    ("answer_text", "outputs", "question", "missing"),
    [
        ("442,789,883", "Output:\n442789883", "", []),
        ("The interest is $6,386.41", "Output:\n6386.408215", "15000 at 6%", []),
        ("6386", "Output:\n6386.408", "", []),
        ("45%", "Output:\n0.4523", "", []),
        ("0.45", "Output:\n45.2 %", "", []),
        ("1.5e6", "Output:\n1500000.0", "", []),
        ("[1, 2, 3]", "Output:\n[1,2,3]", "", []),
        ("3 apples make 12", "Output:\n12", "How much do 3 apples cost at 4?", []),
        ("1200", "Output:\n42", "a question that says 1200", ["1200"]),  # from the question only
        ("3.14159", "Output:\n3.14", "", ["3.14159"]),  # more digits than were printed
        ("Paris", "Output:\n42", "", None),
    ],
)
def test_the_number_rule(answer_text: str, outputs: str, question: str, missing: list[str] | None) -> None:
    assert unsupported_numbers(answer_text, outputs, question) == missing


def test_examples_are_read_in_the_forms_questions_write_them() -> None:
    question = """
    >>> f([1, 2])
    3
    g('ab') returns 1
    h([]) == None
    k("x y", 4) ==> ["x"]
    m(15)   # returns "db1111db"
    n([1, 3]) == 1 + 9 = 10
    p(a) => False
    def q(x: int) -> bool:
    """
    found = [(e.call, e.want) for e in examples(question)]
    assert found == [
        ("f([1, 2])", "3"),
        ("g('ab')", "1"),
        ("h([])", "None"),
        ('k("x y", 4)', '["x"]'),
        ("m(15)", '"db1111db"'),
    ]


def test_the_setting_takes_true_and_false() -> None:
    assert AgentSettings(critic=True).critic == "all"  # type: ignore[arg-type]
    assert AgentSettings(critic="false").critic == "off"  # type: ignore[arg-type]
    assert AgentSettings(critic="examples").critic == "examples"
    with pytest.raises(ValueError, match="critic"):
        AgentSettings(critic="maybe")  # type: ignore[arg-type]


def test_the_terminal_shows_the_verdicts_briefly() -> None:
    console = Console(record=True, width=100, color_system=None)
    render = Renderer(console)
    failed = AnswerChecked(step=2, answer="41", checks=["numbers"], passed=False, problems=["41 is not 42"])
    render(failed.model_copy(update={"retry": True, "observation": "told"}))
    render(failed.model_copy(update={"note": "the answer stands after its one retry, though: 41 is not 42"}))
    render(AnswerChecked(step=3, answer="42", checks=["numbers", "examples"], passed=True))
    assert console.export_text().splitlines() == [
        "✗ answer checked: asking the model once more",
        "  41 is not 42",
        "note: the answer stands after its one retry, though: 41 is not 42",
        "✓ answer checked (numbers and examples)",
    ]
