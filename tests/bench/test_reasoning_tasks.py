"""Task families of ``thinkbox bench reasoning``: items are reproducible, each scorer accepts its own ground
truth and rejects a wrong answer, the report's arithmetic is right. No sandbox, no model."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from thinkbox.bench.reasoning.report import ArmStats, summarize, wilson
from thinkbox.bench.reasoning.runner import DEFAULT_FAMILIES, BenchConfig, check_config
from thinkbox.bench.reasoning.tasks import Item, clean_answer, get_family, last_number
from thinkbox.errors import ConfigError

NO_SANDBOX_FAMILIES = [f for f in DEFAULT_FAMILIES if f != "humaneval"]


class NoChecker:
    """These families must never need the sandbox to score."""

    async def run(self, code: str, *, timeout_s: float) -> object:
        raise AssertionError("scoring this family ran code")


def a_wrong_answer(item: Item) -> str:
    """Close to right where the answer is a number (off by one), else plainly wrong."""
    if item.expected.replace(".", "", 1).lstrip("-").isdigit():
        return str(Decimal(item.expected) + 1)
    return "I do not know"


@pytest.mark.parametrize("difficulty", [1, 2, 3])
@pytest.mark.parametrize("name", NO_SANDBOX_FAMILIES)
async def test_each_family_accepts_its_own_answer_and_rejects_a_wrong_one(name: str, difficulty: int) -> None:
    family = get_family(name)
    items = family.items(5, 7, difficulty)
    assert len(items) == 5 and [i.index for i in items] == list(range(5))
    for item in items:
        assert item.question and item.family == name
        assert await family.score(item, item.expected, NoChecker()), (item.question, item.expected)
        assert not await family.score(item, a_wrong_answer(item), NoChecker()), (item.question, item.expected)
        assert not await family.score(item, "", NoChecker())


@pytest.mark.parametrize("name", ["products", "csv_stats", "tsp", "knapsack", "loan", "recall", "wording"])
def test_items_are_the_same_for_the_same_seed_and_differ_for_another(name: str) -> None:
    family = get_family(name)
    first = [(i.question, i.expected, i.files) for i in family.items(4, 3, 2)]
    again = [(i.question, i.expected, i.files) for i in get_family(name).items(4, 3, 2)]
    other = [(i.question, i.expected, i.files) for i in family.items(4, 4, 2)]
    assert first == again
    assert first != other


def test_difficulty_changes_the_items() -> None:
    tsp = get_family("tsp")
    assert tsp.items(1, 0, 1)[0].question.startswith("Road distances between 5 cities")
    assert tsp.items(1, 0, 3)[0].question.startswith("Road distances between 8 cities")
    products = get_family("products")
    easy = [last_number(i.expected) or 0 for i in products.items(10, 0, 1)]
    hard = [last_number(i.expected) or 0 for i in products.items(10, 0, 3)]
    assert max(easy) < 10_000 < min(hard)


def test_the_csv_family_places_its_table_in_the_workspace() -> None:
    item = get_family("csv_stats").items(1, 0, 1)[0]
    table = item.files["sales.csv"].decode()
    assert table.splitlines()[0] == "region,product,units,price"
    assert len(table.splitlines()) == 13
    assert "sales.csv" in item.question


def test_answers_wrapped_in_words_fences_or_a_full_stop_are_read_the_same_for_every_arm() -> None:
    assert clean_answer("The answer is 42.") == "42"
    assert clean_answer("Final answer: Paris") == "Paris"
    assert clean_answer("```\n793546072\n```") == "793546072"
    assert clean_answer("`Friday`") == "Friday"
    assert last_number("It costs $1,234.50 in total") == 1234.5


async def test_the_control_scorer_does_not_accept_a_list_of_guesses() -> None:
    recall = get_family("recall")
    item = Item(family="recall", index=0, question="capital of France?", expected="Paris", data="Paris")
    assert await recall.score(item, "The capital of France is Paris.", NoChecker())
    assert not await recall.score(
        item, "London, Madrid, Rome, Berlin, Lisbon, Vienna, Oslo, Dublin, Paris", NoChecker()
    )


def test_any_reasoning_gym_dataset_is_a_family_and_an_unknown_name_names_the_flag() -> None:
    gcd = get_family("gcd")
    assert gcd.kind == "compute" and len(gcd.items(2, 0, 1)) == 2
    with pytest.raises(ConfigError, match="--families"):
        get_family("no_such_family")
    with pytest.raises(ConfigError, match="--arms"):
        check_config(BenchConfig(families=["products"], arms=["direct", "oracle"]))
    with pytest.raises(ConfigError, match="--router"):
        check_config(BenchConfig(families=["products"], router="coin"))
    with pytest.raises(ConfigError, match="same arm twice"):
        check_config(BenchConfig(families=["products"], arms=["router", "router:auto"], router="auto"))
    check_config(BenchConfig(families=["products"], arms=["direct", "code", "router"]))


def test_wilson_interval_matches_its_closed_forms() -> None:
    z2 = 1.959964**2
    assert wilson(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    low, high = wilson(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def _stats(accuracy: float) -> ArmStats:
    return ArmStats(accuracy=accuracy, ci_low=0, ci_high=1, n=10, correct=round(accuracy * 10), code_rate=0,
                    mean_steps=1, mean_tokens=1, mean_s=1, no_answer=0)  # fmt: skip


def test_summary_averages_code_gains_over_computation_families_and_finds_the_router_worst_gap() -> None:
    families = {
        "products": {"direct": _stats(0.2), "code": _stats(0.9), "router": _stats(0.9)},
        "tsp": {"direct": _stats(0.1), "code": _stats(0.4), "router": _stats(0.3)},
        "recall": {"direct": _stats(1.0), "code": _stats(0.8), "router": _stats(0.95)},
    }
    kinds = {"products": "compute", "tsp": "compute", "recall": "control"}
    summary = summarize(families, kinds)
    assert summary.code_minus_direct_pp == pytest.approx((70 + 30) / 2)
    assert summary.code_minus_direct_by_family_pp == {"products": 70.0, "tsp": 30.0}
    assert summary.router_worst_gap_pp == pytest.approx(10.0)
    assert summary.router_worst_family == "tsp"
    assert math.isclose(summary.router_gap_by_family_pp["recall"], 5.0)


@pytest.mark.parametrize("name", ["products", "count_primes", "gsm_symbolic", "decimal_arithmetic"])
async def test_a_number_said_in_a_sentence_counts_for_reasoning_gym_families_with_a_numeric_answer(
    name: str,
) -> None:
    family = get_family(name)
    for item in family.items(3, 1, 2):
        assert await family.score(item, f"After computing, the result is {item.expected}.", NoChecker())
        assert not await family.score(
            item, f"After computing, the result is {Decimal(item.expected) + 1}.", NoChecker()
        )
