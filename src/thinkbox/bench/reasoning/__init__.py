"""``thinkbox bench reasoning``: does thinking in code beat answering directly, family by family?

The same model answers the same items in three arms (``direct``, ``code``, ``router``); each answer is
scored by the family's own ground truth; the report gives accuracy with a Wilson 95 % interval, the share
of items where code ran, steps, tokens and time. Modules: ``tasks`` (the family interface and registry)
with ``gym``, ``humaneval``, ``generated`` and ``controls``; ``arms``; ``router``; ``runner`` (caching,
resume); ``report``.
"""

from thinkbox.bench.reasoning.report import Report, wilson
from thinkbox.bench.reasoning.runner import BenchConfig, run_reasoning_bench
from thinkbox.bench.reasoning.tasks import Family, Item, clean_answer, get_family

__all__ = [
    "BenchConfig",
    "Family",
    "Item",
    "Report",
    "clean_answer",
    "get_family",
    "run_reasoning_bench",
    "wilson",
]
