"""The ``variables`` request (docs/protocol.md): what a session defines, listed without running its code,
on every backend that runs here."""

from __future__ import annotations

import pytest

from thinkbox.sandbox.backend import SandboxBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")


CELL = """
import numpy as np, pandas as pd, matplotlib.pyplot as plt
n = 42
name = "<b>x</b>" * 100
xs = [1, 2.5, "a", [3, 4]]
table = {"a": 1, "b": (2, 3)}
arr = np.zeros((3, 4))
df = pd.DataFrame({"price": [1.0, 2.0], "qty": [3, 4]})
big = 10 ** 5000
_private = 1
def f(x):
    return x
class Loud:
    def __repr__(self):
        calls.append(1)
        print("repr ran")
        return "loud"
calls = []
loud = Loud()
globals()[1] = "a key that is not a name"
globals()["long" * 100] = 1
"""


async def test_variables_are_described_without_running_user_code(sandbox_backend: SandboxBackend) -> None:
    async with await sandbox_backend.create_session() as s:
        result = await s.execute(CELL)
        assert result.error is None, result.error
        found = {v.name: v for v in (await s.variables()).variables}
        assert found["n"].type == "int" and found["n"].repr == "42"
        assert found["name"].repr.startswith("'<b>x</b>") and len(found["name"].repr) <= 120
        assert found["xs"].repr == "[1, 2.5, 'a', [3, 4]]"
        assert found["table"].repr == "{'a': 1, 'b': (2, 3)}"
        assert found["arr"].type == "numpy.ndarray" and found["arr"].repr == "array 3x4 float64"
        assert found["df"].repr == "DataFrame 2 rows x 2 columns: price, qty"
        assert found["big"].repr.startswith("int of ")
        assert found["f"].repr == "function f" and found["Loud"].repr == "class Loud"
        assert found["loud"].type == "Loud" and found["loud"].repr == "Loud"
        assert found["np"].repr == "module numpy"
        assert "_private" not in found and "display" not in found
        assert any(name.startswith("longlong") and len(name) <= 120 for name in found)
        after = await s.execute("print(len(calls))\n_")
        assert after.stdout == "0\n", "listing the variables ran the user's __repr__"


async def test_a_listing_is_not_a_cell_and_changes_nothing(sandbox_backend: SandboxBackend) -> None:
    async with await sandbox_backend.create_session() as s:
        await s.execute("x = 1\nx")
        executions = s.executions
        await s.variables()
        await s.variables()
        assert s.executions == executions, "a listing counted as an execution"
        result = await s.execute("_")
        assert result.result == "1", "a listing changed the last result"
        cell = await s.execute("1 / 0")
        assert cell.error is not None and "<cell-3>" in cell.error.traceback, cell.error.traceback
