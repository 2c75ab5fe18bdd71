"""End to end on the embedded defaults: ``thinkbox ask`` with the real local 1.5B model and the default
sandbox, exactly as the README's first command runs it. Marked ``model`` (CI runs them with ``-m model``,
one model process at a time)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.service_support import require_embedded_model

pytestmark = pytest.mark.model

THINKBOX = str(Path(sys.executable).with_name("thinkbox"))


@pytest.fixture(scope="module")
def default_model() -> None:
    require_embedded_model()


def ask(question: str, tmp_path: Path) -> tuple[int, list[dict[str, object]]]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("THINKBOX_MODEL__BASE_URL", None)
    proc = subprocess.run(
        [THINKBOX, "ask", "--json", question],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events, f"no JSON events; stderr:\n{proc.stderr[-3000:]}"
    return proc.returncode, events


def digits(text: object) -> str:
    return re.sub(r"[,\s_]", "", str(text))


@pytest.mark.usefixtures("default_model")
def test_the_embedded_model_computes_a_product_by_running_code(tmp_path: Path) -> None:
    status, events = ask("What is 48271 * 9173?", tmp_path)
    last = events[-1]
    assert status == 0, last
    assert last["type"] == "final_answer"
    assert "442789883" in digits(last["answer"])
    ran = any(e["type"] == "execution_finished" for e in events)
    assert ran, "the answer was not computed in the sandbox"


@pytest.mark.usefixtures("default_model")
def test_the_embedded_model_counts_letters_with_code(tmp_path: Path) -> None:
    status, events = ask('How many times does the letter "r" occur in the word "strawberry"?', tmp_path)
    last = events[-1]
    assert status == 0, last
    assert re.search(r"\b3\b|three", str(last["answer"]), re.IGNORECASE), last["answer"]
