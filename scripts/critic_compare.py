"""Compare a `thinkbox bench reasoning` run with the critic on against one with it off, per family.

    python scripts/critic_compare.py ON_DIR [OFF_DIR]

Reads each folder's results.jsonl (the code arm). The critic's verdicts are in the on run's notes
("critic retry on '<first answer>': ...", "critic stands on ..."). Decoding is greedy, so until the
critic first fails an answer both runs send the same requests: an item where the critic never asked for
a retry has the same outcome in both runs, and the off run's answer to an item where it did is that first
answer. So where the off run lacks an item, its result is taken from the on run: the same result when the
critic did not retry, else the first answer scored with the family's own scorer (marked "rescored";
HumanEval is never rescored, since its answer may be the session's code at that moment).
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from thinkbox.bench.reasoning.tasks import get_family
from thinkbox.sandbox.types import ExecutionResult


class _NoChecker:
    async def run(self, code: str, *, timeout_s: float) -> ExecutionResult:
        raise RuntimeError("this family needs a sandbox to score; it is not rescored")


def load(folder: Path) -> dict[tuple[str, int], dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    return {(r["family"], r["index"]): r for r in rows if r["arm"] == "code"}


def first_answer(row: dict[str, Any]) -> str | None:
    for note in row.get("notes", []):
        if note.startswith("critic retry on "):
            literal = note.removeprefix("critic retry on ").split(": ", 1)[0]
            try:
                return str(ast.literal_eval(literal))
            except (ValueError, SyntaxError):
                return None
    return None


async def off_result(row: dict[str, Any], off: dict[str, Any] | None) -> tuple[bool | None, str]:
    if off is not None:
        return off["correct"], "off run"
    first = first_answer(row)
    if first is None and not any(n.startswith("critic retry") for n in row.get("notes", [])):
        return row["correct"], "same as on (no retry)"
    if first is None or row["family"].startswith("humaneval"):
        return None, "unknown"
    family = get_family(row["family"])
    item = family.items(row["index"] + 1, row["seed"], row["difficulty"])[row["index"]]
    return await family.score(item, first, _NoChecker()), "rescored"


async def main(on_dir: Path, off_dir: Path | None) -> None:
    on = load(on_dir)
    off = load(off_dir) if off_dir else {}
    table: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for key, row in sorted(on.items()):
        was, source = await off_result(row, off.get(key))
        retried = any(n.startswith("critic retry") for n in row["notes"])
        stood = any(n.startswith("critic stands") for n in row["notes"])
        t = table[row["family"]]
        t["n"] += 1
        t["on"] += row["correct"]
        t["off"] += bool(was)
        t["off_unknown"] += was is None
        t["retries"] += retried
        t["stood"] += stood
        t["fixed"] += retried and was is False and row["correct"]
        t["broke"] += retried and was is True and not row["correct"]
        if key in off:
            t["paired"] += 1
            t["extra_s"] += row["wall_s"] - off[key]["wall_s"]
            if retried:
                t["extra_s_retried"] += row["wall_s"] - off[key]["wall_s"]
        t["on_s"] += row["wall_s"]
        print(f"{row['family']:>14} #{row['index']} off={was} ({source}) on={row['correct']} "
              f"retry={retried} stood={stood} {row['wall_s']:.0f}s notes={row['notes']}")  # fmt: skip
    print()
    print("| family | n | off right | on right | retries | stood | fixed | broke | extra s (paired items) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for family, t in table.items():
        unknown = f" ({int(t['off_unknown'])} unknown)" if t["off_unknown"] else ""
        extra = f"{t['extra_s']:+.0f} over {int(t['paired'])}" if t["paired"] else "-"
        print(f"| {family} | {int(t['n'])} | {int(t['off'])}{unknown} | {int(t['on'])} | "
              f"{int(t['retries'])} | "
              f"{int(t['stood'])} | {int(t['fixed'])} | {int(t['broke'])} | {extra} |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
