"""Generated families whose exact answers are computed here by plain, checkable means.

- ``csv_stats``: a sales table placed in the workspace as ``sales.csv``; sums, means, medians, counts.
  Difficulty: 12 / 60 / 300 rows.
- ``tsp``: the shortest round trip over 5 / 6-7 / 8 cities, against a brute-force optimum.
- ``knapsack``: 0/1 knapsack with 5 / 9 / 14 items, against dynamic programming.
- ``loan``: compound interest / the monthly payment of an amortised loan / the balance after k payments.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import random
import statistics
import string

from thinkbox.bench.reasoning.tasks import Checker, Item, Kind, check_difficulty, number_matches


def _rng(name: str, seed: int, difficulty: int, index: int) -> random.Random:
    return random.Random(f"{name}:{seed}:{difficulty}:{index}")


class _Numeric:
    """A family whose answer is one number, matched within ``tolerance``."""

    name = ""
    kind: Kind = "compute"
    tolerance = 0.0

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        check_difficulty(difficulty)
        return [self.make(_rng(self.name, seed, difficulty, i), i, difficulty) for i in range(n)]

    def make(self, rng: random.Random, index: int, difficulty: int) -> Item:
        raise NotImplementedError

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        return number_matches(answer, float(item.expected), self.tolerance)


REGIONS = ("North", "South", "East", "West")
PRODUCTS = ("apples", "bread", "cheese", "dates", "eggs")


class CsvStats(_Numeric):
    name = "csv_stats"
    tolerance = 0.011

    def make(self, rng: random.Random, index: int, difficulty: int) -> Item:
        rows_n = (12, 60, 300)[difficulty - 1]
        rows = [
            (rng.choice(REGIONS), rng.choice(PRODUCTS), rng.randint(1, 50), round(rng.uniform(1, 100), 2))
            for _ in range(rows_n)
        ]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["region", "product", "units", "price"])
        writer.writerows(rows)
        region, product = rng.choice(REGIONS), rng.choice(PRODUCTS)
        how = "Round to 2 decimal places; reply with the number only."
        threshold = rng.randint(10, 40)
        kind = index % 5
        if kind == 0:
            value = round(sum(u * p for r, _, u, p in rows if r == region), 2)
            ask = f"What is the total revenue (units times price, summed over rows) in the {region} region?"
        elif kind == 1:
            units = [u for _, q, u, _ in rows if q == product] or [0]
            value = round(statistics.fmean(units), 2)
            ask = f"What is the mean number of units per row for the product {product}?"
        elif kind == 2:
            value = round(statistics.median(p for *_, p in rows), 2)
            ask = "What is the median price over all rows?"
        elif kind == 3:
            value = sum(1 for _, _, u, _ in rows if u > threshold)
            ask = f"How many rows have more than {threshold} units?"
            how = "Reply with the whole number only."
        else:
            value = round(max((u * p for r, _, u, p in rows if r == region), default=0.0), 2)
            ask = f"What is the largest revenue (units times price) of a single row in the {region} region?"
        question = (
            f"The file sales.csv has columns region, product, units, price ({rows_n} rows). {ask} {how}"
        )
        return Item(
            family=self.name,
            index=index,
            question=question,
            expected=_fmt(value),
            files={"sales.csv": buf.getvalue().encode()},
        )


class Tsp(_Numeric):
    name = "tsp"

    def make(self, rng: random.Random, index: int, difficulty: int) -> Item:
        count = (5, rng.choice((6, 7)), 8)[difficulty - 1]
        names = string.ascii_uppercase[:count]
        points = [(rng.randint(0, 100), rng.randint(0, 100)) for _ in names]
        dist = [[round(math.dist(a, b)) for b in points] for a in points]
        best = min(
            sum(dist[a][b] for a, b in itertools.pairwise((0, *perm, 0)))
            for perm in itertools.permutations(range(1, count))
        )
        pairs = ", ".join(
            f"{names[i]}-{names[j]} {dist[i][j]}" for i, j in itertools.combinations(range(count), 2)
        )
        question = (
            f"Road distances between {count} cities (the same in both directions): {pairs}. "
            "What is the length of the shortest round trip that starts at A, visits every other city "
            "exactly once and returns to A? Reply with the length only."
        )
        return Item(family=self.name, index=index, question=question, expected=str(best))


class Knapsack(_Numeric):
    name = "knapsack"

    def make(self, rng: random.Random, index: int, difficulty: int) -> Item:
        count = (5, 9, 14)[difficulty - 1]
        weights = [rng.randint(1, 20) for _ in range(count)]
        values = [rng.randint(1, 60) for _ in range(count)]
        capacity = max(max(weights), int(sum(weights) * rng.uniform(0.3, 0.5)))
        best = [0] * (capacity + 1)
        for w, v in zip(weights, values, strict=True):
            for c in range(capacity, w - 1, -1):
                best[c] = max(best[c], best[c - w] + v)
        listed = "; ".join(
            f"item {i + 1}: weight {w}, value {v}"
            for i, (w, v) in enumerate(zip(weights, values, strict=True))
        )
        question = (
            f"A knapsack holds at most weight {capacity}. Items (each can be taken at most once): {listed}. "
            "What is the largest total value that fits? Reply with the number only."
        )
        return Item(family=self.name, index=index, question=question, expected=str(best[capacity]))


class Loan(_Numeric):
    name = "loan"
    tolerance = 0.011

    def make(self, rng: random.Random, index: int, difficulty: int) -> Item:
        principal = rng.randrange(5_000, 300_000, 500)
        rate = rng.choice((2.5, 3.0, 3.75, 4.2, 5.0, 5.5, 6.0, 6.8, 7.25))
        years = rng.choice((3, 5, 10, 15, 20, 30))
        if difficulty == 1:
            per_year = rng.choice((1, 4, 12))
            value = principal * (1 + rate / 100 / per_year) ** (per_year * years) - principal
            how = {1: "annually", 4: "quarterly", 12: "monthly"}[per_year]
            ask = (
                f"{principal} is invested at {rate}% a year, compounded {how}, for {years} years. How much "
                "interest is earned?"
            )
        else:
            i, months = rate / 100 / 12, years * 12
            payment = principal * i / (1 - (1 + i) ** -months)
            if difficulty == 2:
                value = payment
                ask = (
                    f"A loan of {principal} at {rate}% a year (monthly rate = annual rate / 12) is repaid in "
                    f"{months} equal monthly payments. What is the monthly payment?"
                )
            else:
                k = rng.randint(1, months - 1)
                value = principal * (1 + i) ** k - payment * ((1 + i) ** k - 1) / i
                ask = (
                    f"A loan of {principal} at {rate}% a year (monthly rate = annual rate / 12) is repaid in "
                    f"{months} equal monthly payments (the payment is not rounded). What is the "
                    f"balance still owed right after payment number {k}?"
                )
        question = ask + " Round to cents; reply with the number only."
        return Item(family=self.name, index=index, question=question, expected=_fmt(round(value, 2)))


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"
