"""reasoning-gym families: its generators make the items, its scorers judge the answers.

Difficulty: the ten families in :data:`GYM_LEVELS` have a table of three levels chosen here (each level a
set of reasoning-gym config fields). Any other reasoning-gym dataset uses reasoning-gym's own curriculum
at level ``difficulty - 1`` when it has one, else its default configuration. ``gsm_symbolic`` supports a
single difficulty in reasoning-gym 0.1.x, so its three levels are the same.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from thinkbox.bench.reasoning.tasks import (
    Checker,
    Item,
    Kind,
    check_difficulty,
    clean_answer,
    last_number_text,
)
from thinkbox.errors import ConfigError

GYM_LEVELS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "products": (
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
        {"min_terms": 2, "max_terms": 2, "min_digits": 3, "max_digits": 5},
        {"min_terms": 2, "max_terms": 3, "min_digits": 4, "max_digits": 6},
    ),
    "decimal_arithmetic": (
        {
            "min_terms": 2,
            "max_terms": 2,
            "min_num_decimal_places": 1,
            "max_num_decimal_places": 2,
            "precision": 6,
        },
        {
            "min_terms": 3,
            "max_terms": 4,
            "min_num_decimal_places": 2,
            "max_num_decimal_places": 3,
            "precision": 8,
        },
        {
            "min_terms": 4,
            "max_terms": 6,
            "min_num_decimal_places": 2,
            "max_num_decimal_places": 4,
            "precision": 10,
        },
    ),
    "letter_counting": (
        {"min_words": 3, "max_words": 5},
        {"min_words": 8, "max_words": 15},
        {"min_words": 15, "max_words": 30},
    ),
    "calendar_arithmetic": (
        {"tasks": ["weekday_of_date"], "offset_upper_bound": 30},
        {
            "tasks": ["weekday_of_date", "weekday_offset", "count_days", "count_business_days"],
            "offset_upper_bound": 100,
        },
        {
            "tasks": [
                "weekday_offset",
                "weekday_of_date",
                "weekday_of_date_from_first_date",
                "recurring_event_day",
                "count_days",
                "count_business_days",
                "is_leap_year",
            ],
            "offset_upper_bound": 365,
        },
    ),
    "time_intervals": (
        {"task_types": ["time"], "max_time_difference_seconds": 3600},
        {"task_types": ["time", "time_seconds", "date"]},
        {},
    ),
    "shortest_path": (
        {"min_rows": 4, "max_rows": 5, "min_cols": 4, "max_cols": 5},
        {"min_rows": 5, "max_rows": 7, "min_cols": 5, "max_cols": 7},
        {"min_rows": 8, "max_rows": 10, "min_cols": 8, "max_cols": 10},
    ),
    "count_primes": ({"min_n": 1, "max_n": 100}, {"min_n": 1, "max_n": 2000}, {"min_n": 1, "max_n": 20000}),
    "gsm_symbolic": ({}, {}, {}),
    "number_sorting": (
        {"min_numbers": 3, "max_numbers": 5, "min_decimals": 0, "max_decimals": 0},
        {"min_numbers": 6, "max_numbers": 10, "min_decimals": 0, "max_decimals": 2},
        {"min_numbers": 15, "max_numbers": 25, "min_decimals": 0, "max_decimals": 3},
    ),
    "base_conversion": (
        {"min_base": 2, "max_base": 10, "min_value": 0, "max_value": 255},
        {"min_base": 2, "max_base": 16, "min_value": 100, "max_value": 5000},
        {"min_base": 2, "max_base": 36, "min_value": 1000, "max_value": 100000},
    ),
}
GYM_FAMILIES: tuple[str, ...] = tuple(GYM_LEVELS)
_NUMBER_ONLY = re.compile(r"-?\d+(?:\.\d+)?")


@functools.cache
def dataset_names() -> frozenset[str]:
    """Every reasoning-gym dataset name (empty when reasoning-gym is not installed)."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        return frozenset()
    return frozenset(DATASETS)


class GymFamily:
    """One reasoning-gym dataset as a family; ``score`` is the dataset's own ``score_answer``."""

    kind: Kind = "compute"

    def __init__(self, name: str) -> None:
        self.name = name
        self._datasets: dict[tuple[int, int, int], Any] = {}

    def config(self, n: int, seed: int, difficulty: int) -> dict[str, Any]:
        """The reasoning-gym config fields for these items."""
        level = check_difficulty(difficulty)
        if self.name in GYM_LEVELS:
            return {**GYM_LEVELS[self.name][level - 1], "size": n, "seed": seed}
        from reasoning_gym.factory import create_curriculum, has_curriculum

        if not has_curriculum(self.name):
            return {"size": n, "seed": seed}
        curriculum = create_curriculum(self.name)
        curriculum.set_global_level(level - 1)
        config = curriculum.generate_configuration({"size": n, "seed": seed})
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}

    def _dataset(self, n: int, seed: int, difficulty: int) -> Any:
        key = (n, seed, difficulty)
        if key not in self._datasets:
            try:
                import reasoning_gym
            except ImportError:
                raise ConfigError(
                    f"family {self.name!r} needs reasoning-gym: pip install 'thinkbox[bench]'"
                ) from None
            try:
                self._datasets[key] = reasoning_gym.create_dataset(
                    self.name, **self.config(n, seed, difficulty)
                )
            except (TypeError, ValueError, AssertionError) as exc:
                raise ConfigError(
                    f"reasoning-gym cannot make {self.name!r} at difficulty {difficulty}: {exc}; try another "
                    "--difficulty"
                ) from None
        return self._datasets[key]

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        dataset = self._dataset(n, seed, difficulty)
        items = []
        for index in range(n):
            entry = dataset[index]
            items.append(
                Item(
                    family=self.name,
                    index=index,
                    question=str(entry["question"]),
                    expected=str(entry["answer"]),
                    data=(dataset, entry),
                )
            )
        return items

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        """reasoning-gym's score of the cleaned answer; where the reference is one number, also of the last
        number in the answer ("The product is 793,546,072." reads as 793546072), for every arm alike."""
        dataset, entry = item.data
        candidates = [clean_answer(answer)]
        if _NUMBER_ONLY.fullmatch(item.expected.strip()) and (number := last_number_text(answer)):
            candidates.append(number)
        for candidate in candidates:
            try:
                if float(dataset.score_answer(candidate, entry)) >= 0.999:
                    return True
            except Exception:  # a scorer that chokes on a malformed answer: that reading is wrong
                continue
        return False
