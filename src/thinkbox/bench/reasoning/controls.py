"""Control families: questions where running code should not help, so that its cost shows.

- ``recall``: well-known facts with one checkable answer. Difficulty: capitals of large countries /
  chemical symbols / capitals that are often confused.
- ``wording``: English word forms. Difficulty: irregular plurals and past tenses / past participles /
  Latin and Greek plurals (either accepted form counts).

An answer is right when one of the accepted forms appears as a whole word in an answer of at most eight
words (a list of guesses is not an answer).
"""

from __future__ import annotations

import random
import re
import unicodedata

from thinkbox.bench.reasoning.tasks import Checker, Item, Kind, check_difficulty, clean_answer

Fact = tuple[str, str]  # (question, accepted answers separated by |)

RECALL: tuple[tuple[Fact, ...], ...] = (
    tuple(
        (f"What is the capital of {country}?", capital)
        for country, capital in (
            ("France", "Paris"),
            ("Japan", "Tokyo"),
            ("Italy", "Rome"),
            ("Germany", "Berlin"),
            ("Spain", "Madrid"),
            ("Egypt", "Cairo"),
            ("Russia", "Moscow"),
            ("China", "Beijing|Peking"),
            ("the United Kingdom", "London"),
            ("Greece", "Athens"),
            ("Norway", "Oslo"),
            ("Ireland", "Dublin"),
            ("Portugal", "Lisbon"),
            ("Austria", "Vienna"),
            ("Thailand", "Bangkok"),
            ("Argentina", "Buenos Aires"),
        )
    ),
    tuple(
        (f"What is the chemical symbol of {element}?", symbol)
        for element, symbol in (
            ("gold", "Au"),
            ("iron", "Fe"),
            ("sodium", "Na"),
            ("silver", "Ag"),
            ("potassium", "K"),
            ("lead", "Pb"),
            ("copper", "Cu"),
            ("mercury", "Hg"),
            ("tin", "Sn"),
            ("helium", "He"),
            ("oxygen", "O"),
            ("carbon", "C"),
            ("calcium", "Ca"),
            ("zinc", "Zn"),
            ("neon", "Ne"),
            ("tungsten", "W"),
        )
    ),
    tuple(
        (f"What is the capital of {country}?", capital)
        for country, capital in (
            ("Australia", "Canberra"),
            ("Canada", "Ottawa"),
            ("Brazil", "Brasilia"),
            ("Turkey", "Ankara"),
            ("Nigeria", "Abuja"),
            ("Pakistan", "Islamabad"),
            ("Switzerland", "Bern|Berne"),
            ("New Zealand", "Wellington"),
            ("Morocco", "Rabat"),
            ("Vietnam", "Hanoi"),
            ("Myanmar", "Naypyidaw"),
            ("Kazakhstan", "Astana"),
            ("Tanzania", "Dodoma"),
            ("Bolivia", "Sucre|La Paz"),
            ("Sri Lanka", "Sri Jayawardenepura Kotte|Kotte"),
            ("South Korea", "Seoul"),
        )
    ),
)

WORDING: tuple[tuple[Fact, ...], ...] = (
    tuple(
        (f'What is the {form} of the English word "{word}"?', answer)
        for form, word, answer in (
            ("plural", "child", "children"),
            ("plural", "mouse", "mice"),
            ("plural", "foot", "feet"),
            ("plural", "tooth", "teeth"),
            ("plural", "woman", "women"),
            ("plural", "goose", "geese"),
            ("plural", "person", "people|persons"),
            ("plural", "sheep", "sheep"),
            ("past tense", "go", "went"),
            ("past tense", "eat", "ate"),
            ("past tense", "run", "ran"),
            ("past tense", "see", "saw"),
            ("past tense", "take", "took"),
            ("past tense", "buy", "bought"),
            ("past tense", "think", "thought"),
            ("past tense", "teach", "taught"),
        )
    ),
    tuple(
        (f'What is the past participle of the English verb "{word}"?', answer)
        for word, answer in (
            ("begin", "begun"),
            ("swim", "swum"),
            ("write", "written"),
            ("choose", "chosen"),
            ("forget", "forgotten"),
            ("fly", "flown"),
            ("ring", "rung"),
            ("drink", "drunk"),
            ("break", "broken"),
            ("freeze", "frozen"),
            ("bite", "bitten"),
            ("hide", "hidden"),
            ("shake", "shaken"),
            ("sing", "sung"),
            ("tear", "torn"),
            ("wear", "worn"),
        )
    ),
    tuple(
        (f'What is the plural of the English noun "{word}"?', answer)
        for word, answer in (
            ("cactus", "cacti|cactuses"),
            ("criterion", "criteria"),
            ("phenomenon", "phenomena"),
            ("analysis", "analyses"),
            ("crisis", "crises"),
            ("thesis", "theses"),
            ("fungus", "fungi|funguses"),
            ("appendix", "appendices|appendixes"),
            ("index", "indices|indexes"),
            ("nucleus", "nuclei"),
            ("radius", "radii|radiuses"),
            ("stimulus", "stimuli"),
            ("axis", "axes"),
            ("vertex", "vertices|vertexes"),
            ("larva", "larvae|larvas"),
            ("bacterium", "bacteria"),
        )
    ),
)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def matches(answer: str, accepted: str) -> bool:
    """One of the ``|``-separated forms appears as whole words in a short answer."""
    said = _fold(clean_answer(answer))
    if not said or len(said.split()) > 8:
        return False
    return any(f" {_fold(form)} " in f" {said} " for form in accepted.split("|"))


class _Facts:
    name = ""
    kind: Kind = "control"
    levels: tuple[tuple[Fact, ...], ...] = ()

    def items(self, n: int, seed: int, difficulty: int) -> list[Item]:
        pool = list(self.levels[check_difficulty(difficulty) - 1])
        rng = random.Random(f"{self.name}:{seed}:{difficulty}")
        order: list[Fact] = []
        while len(order) < n:  # every fact once before any repeats
            rng.shuffle(pool)
            order.extend(pool)
        return [
            Item(
                family=self.name,
                index=i,
                question=f"{q} Reply with the answer only.",
                expected=a.split("|")[0],
                data=a,
            )
            for i, (q, a) in enumerate(order[:n])
        ]

    async def score(self, item: Item, answer: str, checker: Checker) -> bool:
        return matches(answer, str(item.data))


class Recall(_Facts):
    name = "recall"
    levels = RECALL


class Wording(_Facts):
    name = "wording"
    levels = WORDING
