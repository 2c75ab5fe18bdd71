"""``thinkbox bench tools`` end to end with a scripted model (the embedded model's figures come from running
the command, never from a test): a fresh server, two rounds of the three questions, tools saved in the
first round found in the second, and the JSON report with its keys. The script is the same for every run:
its code imports the tools and saves them only when the import fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

THINKBOX = Path(sys.executable).parent / "thinkbox"

CODE = """\
def business_days(start, end):
    import numpy as np
    return int(np.busday_count(start, np.datetime64(end) + 1))


def loan_payment(principal, annual_rate_percent, years):
    r, n = annual_rate_percent / 1200, years * 12
    return round(principal * r / (1 - (1 + r) ** -n), 2)


def count_primes(n):
    sieve = bytearray([1]) * n
    sieve[:2] = b"\\0\\0"
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


try:
    from tools.business_days import business_days
    from tools.loan_payment import loan_payment
    from tools.count_primes import count_primes
except ImportError:
    from tools import save_tool
    save_tool(business_days, tests="def test_b():\\n    assert business_days('2026-03-02', '2026-03-06')")
    save_tool(loan_payment, tests="def test_l():\\n    assert loan_payment(1200, 0.0001, 1) > 99")
    save_tool(count_primes, tests="def test_c():\\n    assert count_primes(10) == 4")
print(business_days("2026-03-02", "2026-04-17"))
"""


def test_bench_tools_runs_both_rounds_and_finds_the_saved_tools(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    replies = [
        {"thought": "tools", "action": "execute_code", "code": CODE, "final_answer": ""},
        {"thought": "done", "action": "provide_answer", "code": "", "final_answer": "35"},
    ]
    script.write_text(json.dumps({"by_step": True, "replies": replies}))
    env = {**os.environ, "THINKBOX_MODEL__PROVIDER": "scripted", "THINKBOX_MODEL__SCRIPT": str(script)}
    proc = subprocess.run(
        [str(THINKBOX), "bench", "tools", "--json"], capture_output=True, text=True, timeout=600, env=env
    )
    report = json.loads(proc.stdout)
    assert report["errors"] == [], report["errors"]
    runs = report["runs"]
    assert [(r["question"], r["round"]) for r in runs] == [
        (q, n) for n in (1, 2) for q in ("business_days", "loan_payment", "count_primes")
    ]
    assert all(r["status"] == "answered" and r["steps"] == 2 and r["tokens"] > 0 for r in runs)
    assert all(r["code"] == [CODE] for r in runs)  # the step that ran, for reading how a run used a tool
    assert report["tools_saved"] == 3 and all(r["saved"] for r in runs if r["round"] == 1)
    # the import is tried in every run; in round 1 it fails inside try/except, which counts as a use
    assert all(r["used_tool"] for r in runs)
    assert runs[0]["right"] and not runs[1]["right"]  # 35 is the first question's answer only
    assert report["first_steps"] == report["second_steps"] == 6
    assert report["target_second_cheaper"] is False and proc.returncode == 1
    assert report["machine"]["cores"] >= 1 and set(report["method"]) >= {"steps", "saved", "used_tool"}


def test_a_tool_imported_then_written_again_does_not_count_as_used() -> None:
    from thinkbox.bench.tools import _bound_by_tools

    imported = "from tools.business_days import business_days\n"
    again = "def business_days(start, end):\n    return 0\n"
    assert _bound_by_tools(imported + "print(business_days('a', 'b'))", set()) == {"business_days"}
    assert _bound_by_tools(imported + again, set()) == set()
    assert _bound_by_tools(again + imported, set()) == {"business_days"}
    assert _bound_by_tools(again, {"business_days"}) == set()  # a later step writes it again


def test_a_call_of_a_saved_tools_function_the_run_did_not_define_counts_as_used() -> None:
    from thinkbox.bench.tools import ToolUse, _bound_by_tools

    saved = {"business_days", "count_primes"}
    call = "print(business_days('2026-03-02', '2026-04-17'))"
    again = "def business_days(start, end):\n    return 0\n"
    # pre-imported by the service: called without an import or a def of its own
    assert _bound_by_tools(call, set(), saved) == {"business_days"}
    assert _bound_by_tools(
        "def main():\n    return business_days('a', 'b')\nprint(main())", set(), saved
    ) == {"business_days"}
    # the run's own: defined (or bound otherwise) before the call in the same step, or written again after
    assert _bound_by_tools(again + call, set(), saved) == set()
    assert _bound_by_tools("business_days = lambda s, e: 0\n" + call, set(), saved) == set()
    assert _bound_by_tools("from mylib import business_days\n" + call, set(), saved) == set()
    assert _bound_by_tools(call + "\n" + again, set(), saved) == set()
    # not a saved tool's function
    assert _bound_by_tools("print(len('abc'))", set(), saved) == set()

    # across steps: a def in an earlier step (even one that failed after it) makes the call the run's own
    use = ToolUse(saved=saved)
    use.step(again + "raise ValueError('later')", ok=False)
    use.step(call, ok=True)
    assert use.from_tools == set()
    # a call in a step that failed does not count; one in a step that ran does
    use = ToolUse(saved=saved)
    use.step("print(count_primes(10))\n1 / 0", ok=False)
    assert use.from_tools == set()
    use.step("print(count_primes(10))", ok=True)
    assert use.from_tools == {"count_primes"}
    # the explicit import still counts, as before
    use = ToolUse(saved=set())
    use.step("from tools.business_days import business_days\n" + call, ok=True)
    assert use.from_tools == {"business_days"}
