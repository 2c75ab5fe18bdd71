"""``thinkbox tools ...`` against a real server: save (refused with the failures, then saved), list, show,
versions, rollback, rm."""

from __future__ import annotations

import secrets
from pathlib import Path

from typer.testing import CliRunner

from thinkbox.cli.app import app

from .conftest import Running


def test_the_tools_commands_save_list_show_version_roll_back_and_remove(
    running: Running, tmp_path: Path
) -> None:
    name = f"area_{secrets.token_hex(3)}"
    module, tests = tmp_path / f"{name}.py", tmp_path / "tests.py"
    module.write_text(
        'def area(w: float, h: float) -> float:\n    """Area of a rectangle."""\n    return w * h\n'
    )
    tests.write_text("def test_area():\n    assert area(2, 3) == 5\n")
    env = {"THINKBOX_SERVER": running.url, "THINKBOX_API_KEY": running.alice.key, "COLUMNS": "200"}
    cli = CliRunner()

    def tb(*args: str) -> tuple[int, str]:
        result = cli.invoke(app, ["tools", *args], env=env)
        return result.exit_code, result.output

    code, out = tb("save", str(module), "--tests", str(tests), "-d", "Rectangle area")
    assert code == 1 and "tool_tests_failed" in out and "test_area" in out and "assert area(2, 3) == 5" in out
    tests.write_text("def test_area():\n    assert area(2, 3) == 6\n")
    assert tb("test", str(module), "--tests", str(tests)) == (0, "passed: 1 tests\n")
    code, out = tb("save", str(module), "--tests", str(tests), "-d", "Rectangle area")
    assert code == 0 and f"saved {name} version 1 (1 tests passed): from tools.{name} import area" in out
    module.write_text(module.read_text().replace("w * h", "h * w"))
    assert tb("save", str(module), "--tests", str(tests))[0] == 0

    code, out = tb("list")
    assert code == 0 and name in out and "area(w: float, h: float) -> float" in out
    code, out = tb("show", name, "--version", "1")
    assert code == 0 and "version 1 (active: 2)" in out and "return w * h" in out
    code, out = tb("versions", name)
    assert code == 0 and "2 (active)" in out
    assert tb("rollback", name, "1") == (0, f"{name}: version 1 is active\n")
    assert tb("rm", name) == (0, f"deleted {name}\n")
    code, out = tb("show", name)
    assert code == 1 and "404 not_found" in out


def test_the_tools_commands_refuse_a_name_that_is_no_name_and_a_file_that_is_not_text(
    running: Running, tmp_path: Path
) -> None:
    """A name with ? / or .. would reach another URL (the server's answer would be a bare Not Found, or about
    another tool): refused before anything is sent, naming it. A binary file, or a key no header can carry,
    is refused saying so, not with a traceback."""
    env = {"THINKBOX_SERVER": running.url, "THINKBOX_API_KEY": running.alice.key, "COLUMNS": "200"}
    cli = CliRunner()
    for bad in ("../../etc/passwd", "area?x=1", "area#x"):
        for args in (["show", bad], ["rm", bad], ["versions", bad], ["rollback", bad, "1"]):
            result = cli.invoke(app, ["tools", *args], env=env)
            assert result.exit_code == 1 and f"tool name {bad!r} is not a valid name" in result.output, args
    for key in ("", "ключ", "tbx_a\nb"):
        result = cli.invoke(app, ["tools", "list", "--api-key", key], env=env)
        assert result.exit_code == 1 and "the API key" in result.output, result.output
        assert "cannot reach" not in result.output  # it was said of an empty key, the service being up
    binary = tmp_path / "tool.py"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff")
    for args in (["save", str(binary)], ["test", str(tmp_path / "ok.py"), "--tests", str(binary)]):
        (tmp_path / "ok.py").write_text("def f():\n    return 1\n")
        result = cli.invoke(app, ["tools", *args], env=env)
        assert result.exit_code == 1 and f"cannot read {binary}: it is not UTF-8 text" in result.output, args
