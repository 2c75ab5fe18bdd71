"""``thinkbox bench model``'s cold-start parts with real processes: ``thinkbox ask`` as a new process, and
through a real ``thinkbox serve`` child on loopback. The model is the scripted one (set through the
environment both processes read): what is checked is which way each ``ask`` went and how its times are
read; the embedded model's own figures come from running ``thinkbox bench model``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinkbox.bench import cold_start
from thinkbox.config import load_settings
from thinkbox.errors import ThinkboxError

ANSWER = {"thought": "It is computed.", "action": "provide_answer", "code": "", "final_answer": "442789883"}


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([ANSWER] * 4), encoding="utf-8")
    monkeypatch.setenv("THINKBOX_MODEL__PROVIDER", "scripted")
    monkeypatch.setenv("THINKBOX_MODEL__SCRIPT", str(script))
    monkeypatch.setenv("THINKBOX_DATA_DIR", str(tmp_path / "user-data"))  # a serve of the user's: not used
    monkeypatch.setenv("THINKBOX_SANDBOX__POOL_SIZE", "0")
    return script


def test_a_cold_ask_runs_in_its_own_process_and_reports_its_first_token_and_answer(scripted: Path) -> None:
    first, answer, text = cold_start._ask_cold(load_settings(), saved_prompt=True)
    assert text == "442789883"
    assert 0 < first <= answer < 120


def test_a_cold_ask_through_a_running_serve_is_answered_by_it(scripted: Path) -> None:
    said: list[str] = []
    first, answer, text = cold_start._ask_through_serve(load_settings(), said.append)
    assert text == "442789883"
    assert 0 < first <= answer < 120
    assert any("answered by the running serve" in line for line in said)


def test_an_ask_that_did_not_go_through_the_serve_is_an_error_not_a_figure(
    scripted: Path, tmp_path: Path
) -> None:
    # a data dir with no serve: ask answers locally, which must not be reported as the serve's time
    with pytest.raises(ThinkboxError, match="did not use the serve"):
        cold_start._ask_cold(load_settings(), saved_prompt=True, data_dir=tmp_path / "no-serve-here")
