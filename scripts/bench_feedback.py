"""What the loop's feedback (lint, file previews, repeats, live docs) saves: practical questions, on vs off.

    PYTHONPATH=src .venv/bin/python scripts/bench_feedback.py OUT_DIR [--only on|off] [--max-wall 180]

Ten questions written for this measurement (none from a benchmark), five about small data files. Each is
asked of the configured model (the embedded 1.5B by default) once with every feedback setting on and once
with all four off, in a fresh sandbox session each time; results go to OUT_DIR/results.jsonl (a rerun
skips what is there) and a summary table is printed. An answer counts as right when a number in it equals
the expected value (to 0.01, or 0.01 %).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl

from thinkbox.agent.events import CodeRejected, FinalAnswer, Notice, ParseFailed, RunFinished
from thinkbox.agent.loop import run_agent
from thinkbox.config import load_settings
from thinkbox.models.factory import get_model
from thinkbox.sandbox import registry
from thinkbox.sandbox.types import SessionConfig

REGIONS = ["North", "South", "East", "West"]
SALES = [(f"2024-01-{d:02d}", REGIONS[d % 4], ["Widget", "Gadget"][d % 2], 3 + (d * 7) % 11, 4.5 + d % 5)
         for d in range(1, 25)]  # fmt: skip
ORDERS = [
    {
        "order_id": 100 + i,
        "customer": {
            "name": ["Alice", "Bob", "Chen"][i % 3],
            "city": ["Oslo", "Lyon", "Oslo", "Kyiv"][i % 4],
        },
        "lines": [{"sku": f"S{j}", "qty": 1 + (i + j) % 4, "price": 2.5 + j} for j in range(1 + i % 3)],
    }
    for i in range(9)
]
STAFF = [("Ann", "Engineering", 72000), ("Bo", "Sales", 51000), ("Cy", "Engineering", 81000),
         ("Di", "Support", 43000), ("Ed", "Engineering", 67500), ("Flo", "Sales", 56000)]  # fmt: skip
LOG = [f"2024-03-01 10:{m:02d} {'ERROR' if m % 7 == 3 else 'INFO'} request {m}" for m in range(40)]


def _xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Staff"
    sheet.append(["Name", "Dept", "Annual salary"])
    for row in STAFF:
        sheet.append(list(row))
    book.create_sheet("Offices").append(["Dept", "City"])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def questions() -> list[dict[str, Any]]:
    csv = "date,region,product,units,unit_price\n" + "".join(",".join(map(str, r)) + "\n" for r in SALES)
    north = sum(u * p for _, r, _, u, p in SALES if r == "North")
    alice = sum(line["qty"] for o in ORDERS if o["customer"]["name"] == "Alice" for line in o["lines"])
    oslo = sum(
        ln["qty"] * ln["price"] for o in ORDERS if o["customer"]["city"] == "Oslo" for ln in o["lines"]
    )
    orders = json.dumps(ORDERS, indent=1).encode()
    engineering = statistics.mean(s for _, d, s in STAFF if d == "Engineering")
    return [
        {"id": "csv-revenue", "files": {"sales.csv": csv.encode()}, "expected": north,
         "q": "What was the total revenue (units times unit price) of the North region in sales.csv?"},
        {"id": "json-units", "files": {"orders.json": orders}, "expected": alice,
         "q": "How many units did Alice order in total, according to orders.json?"},
        {"id": "json-city", "files": {"orders.json": orders}, "expected": oslo,
         "q": "What is the total value (quantity times price) of all orders from customers in Oslo in "
              "orders.json?"},
        {"id": "xlsx-mean", "files": {"staff.xlsx": _xlsx()}, "expected": engineering,
         "q": "What is the average annual salary of the Engineering department in staff.xlsx?"},
        {"id": "log-errors", "files": {"server.log": ("\n".join(LOG) + "\n").encode()},
         "expected": sum("ERROR" in line for line in LOG),
         "q": "How many lines of server.log are errors?"},
        {"id": "median", "files": {}, "expected": statistics.median([12, 7, 3, 18, 5, 9]),
         "q": "What is the median of 12, 7, 3, 18, 5 and 9?"},
        {"id": "days", "files": {}, "expected": (date(2024, 11, 3) - date(2024, 2, 10)).days,
         "q": "How many days are there from 2024-02-10 to 2024-11-03?"},
        {"id": "gcd", "files": {}, "expected": 21,
         "q": "What is the greatest common divisor of 1071 and 462? Compute it with Euclid's algorithm."},
        {"id": "savings", "files": {}, "expected": round(2500 * (1 + 0.04 / 12) ** 36, 2),
         "q": "I invest 2500 at 4% a year compounded monthly. What is the balance after 3 years, in cents?"},
        {"id": "stdev", "files": {}, "expected": round(statistics.stdev([4, 8, 15, 16, 23, 42]), 3),
         "q": "What is the sample standard deviation of 4, 8, 15, 16, 23, 42, rounded to 3 decimals?"},
    ]  # fmt: skip


def right(answer: str | None, expected: float) -> bool:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", (answer or "").replace(",", ""))
    return any(abs(float(n) - expected) <= max(0.01, abs(expected) * 1e-4) for n in numbers)


OFF = {"lint": False, "previews": False, "repeats": False, "live_docs": False}


async def main(out: Path, arms: list[str], max_wall: float) -> None:
    path = out / "results.jsonl"
    done = (
        {(r["id"], r["arm"]) for r in map(json.loads, path.read_text().splitlines())}
        if path.exists()
        else set()
    )
    base = load_settings()
    model = get_model(base)
    backend = registry.create_backend(base.sandbox.backend)
    await backend.start()
    try:
        for item in questions():
            for arm in arms:
                if (item["id"], arm) in done:
                    continue
                agent = {"max_wall_s": max_wall, **(OFF if arm == "off" else {})}
                settings = load_settings(agent=agent)
                row = await one(item, arm, model, backend, settings, out)
                with path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                mark = "right" if row["right"] else "wrong"
                print(f"{item['id']:12} {arm:3} {mark:5} {row['steps']} steps {row['seconds']:6.1f} s "
                      f"{row['feedback']} {row['answer']!r:.60}", flush=True)  # fmt: skip
    finally:
        await backend.aclose()
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()


async def one(
    item: dict[str, Any], arm: str, model: Any, backend: Any, settings: Any, out: Path
) -> dict[str, Any]:
    """One run; its events go to OUT/<id>-<arm>.jsonl."""
    started = time.monotonic()
    row: dict[str, Any] = {"id": item["id"], "arm": arm, "answer": None, "steps": 0, "feedback": {},
                           "parse_failed": 0, "rejected": 0, "notices": []}  # fmt: skip
    async with await backend.create_session(SessionConfig(limits=settings.sandbox.limits)) as session:
        for name, data in item["files"].items():
            await session.put_file(name, data)
        events = run_agent(item["q"], model=model, session=session, settings=settings)
        async for event in events:
            with (out / f"{item['id']}-{arm}.jsonl").open("a") as f:
                f.write(event.model_dump_json() + "\n")
            if isinstance(event, FinalAnswer):
                row["answer"] = event.answer
            elif isinstance(event, ParseFailed):
                row["parse_failed"] += 1
            elif isinstance(event, CodeRejected):
                row["rejected"] += 1
            elif isinstance(event, Notice):
                row["notices"].append(event.kind)
            elif isinstance(event, RunFinished):
                row.update(
                    steps=event.steps, status=event.status, tokens=event.tokens, feedback=event.feedback
                )
    row["seconds"] = round(time.monotonic() - started, 1)
    row["right"] = right(row["answer"], item["expected"])
    row["expected"] = item["expected"]
    return row


if __name__ == "__main__":
    args = sys.argv[1:]
    arms = ["on", "off"]
    if "--only" in args:
        arms = [args[args.index("--only") + 1]]
    wall = float(args[args.index("--max-wall") + 1]) if "--max-wall" in args else 180.0
    Path(args[0]).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(Path(args[0]), arms, wall))
