"""``thinkbox ask --route`` and the ``agent.route`` setting, with the scripted model and a real sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from thinkbox.cli.app import app


def test_ask_route_flag_chooses_the_route_and_the_terminal_shows_why(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("THINKBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("THINKBOX_CONFIG", str(tmp_path / "no-config.toml"))
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["Paris"]), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["ask", "--route", "direct", "--script", str(script), "Capital of France?"])
    assert result.exit_code == 0, result.output
    assert "route: answering directly, without code" in result.stdout and "Paris" in result.stdout
    as_json = runner.invoke(app, ["ask", "--json", "--route", "direct", "--script", str(script), "Capital?"])
    kinds = [json.loads(line)["type"] for line in as_json.stdout.splitlines()]
    assert kinds == ["run_started", "route_chosen", "final_answer"]
    bad = runner.invoke(app, ["ask", "--route", "sometimes", "--script", str(script), "q"])
    assert bad.exit_code == 2 and "--route 'sometimes'" in bad.output and "code, direct, auto" in bad.output
    monkeypatch.setenv("THINKBOX_AGENT__ROUTE", "direct")  # the setting is the default
    from_setting = runner.invoke(app, ["ask", "--json", "--script", str(script), "Capital?"])
    assert json.loads(from_setting.stdout.splitlines()[1])["route"] == "direct"
