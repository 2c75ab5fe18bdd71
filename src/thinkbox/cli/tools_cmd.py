"""``thinkbox tools list|show|save|test|rm|versions|rollback``: the tool store of a thinkbox service.

A client of the service's API (``--server URL``, ``--api-key KEY``, or THINKBOX_SERVER and
THINKBOX_API_KEY), like ``ask --server``: a tool belongs to the key's tenant (and user, when private), and
saving it runs its tests in a sandbox session of the service, so the service must be running.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from thinkbox.client._options import check_key
from thinkbox.errors import ConfigError

tools_app = typer.Typer(
    help="Tools the agent writes and reuses, on a thinkbox service.", no_args_is_help=True
)
ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="THINKBOX_SERVER", help="The service's URL, e.g. http://127.0.0.1:8000."),
]
KeyOpt = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="THINKBOX_API_KEY",
        help="Your key (thinkbox admin key create).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the service's JSON.")]
TIMEOUT_S = 120.0


def register(app: typer.Typer) -> None:
    app.add_typer(tools_app, name="tools")


def _call(server: str, key: str, method: str, path: str, body: Any = None) -> Any:
    """The JSON of the service's answer; a clear message and exit status 1 on an error answer."""
    try:
        key = check_key(key)
    except ConfigError as exc:
        _fail(exc.message)
    try:
        with httpx.Client(
            base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S
        ) as c:
            response = c.request(method, path, json=body)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the service at {server} ({exc}); is thinkbox serve running there? (--server)")
    if response.status_code == 204:
        return None
    try:
        data = response.json()
    except ValueError:
        _fail(f"the service answered {response.status_code} without JSON: {response.text[:300]}")
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        lines = [f"error ({response.status_code} {error.get('code', '')}): {error.get('message', data)}"]
        for failure in error.get("failures", []):
            lines.append(f"--- {failure['test']}\n{failure['error'].rstrip()}")
        _fail("\n".join(lines))
    return data


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(message, markup=False, highlight=False)
    raise typer.Exit(1)


def _name(what: str, value: str, example: str) -> str:
    """``value``, to be put in a URL's path. Tool and secret names are identifiers: anything else (``/``,
    ``?``, ``#``, ``..``) would reach another URL or another name, so it is refused here, naming it."""
    if not (value.isascii() and value.isidentifier()):
        _fail(
            f"{what} {value!r} is not a valid name: use letters, digits and _, not starting with a digit "
            f"(e.g. {example})"
        )
    return value


def _tool_path(name: str) -> str:
    return f"/v1/tools/{_name('tool name', name, 'parse_dates')}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        _fail(
            f"cannot read {path}: it is not UTF-8 text ({exc.reason} at byte {exc.start}); give Python source"
        )


def _body(
    path: Path, tests: Path | None, name: str | None, description: str, private: bool, packages: list[str]
) -> dict[str, Any]:
    return {
        "name": name or path.stem,
        "description": description,
        "source": _read(path),
        "tests": _read(tests) if tests is not None else "",
        "packages": packages,
        "private": private,
    }


def _table(tools: list[dict[str, Any]], *, versions: bool = False) -> Table:
    table = Table(
        "version" if versions else "name", "author" if versions else "version", "functions", "description"
    )
    for tool in tools:
        first = tool["version"] if versions else tool["name"]
        active = " (active)" if versions and tool["version"] == tool["active_version"] else ""
        second = (
            tool["author"]
            if versions
            else str(tool["active_version"]) + (" private" if tool["private"] else "")
        )
        sigs = "\n".join(f"{f['name']}{f['signature']}" for f in tool["functions"])
        table.add_row(f"{first}{active}", second, sigs, tool["description"])
    return table


@tools_app.command("list")
def list_command(server: ServerOpt, api_key: KeyOpt, json_out: JsonOpt = False) -> None:
    """The tools your sessions can import."""
    data = _call(server, api_key, "GET", "/v1/tools")
    if json_out:
        typer.echo(json.dumps(data, indent=2))
    elif not data["tools"]:
        typer.echo("no tools yet: thinkbox tools save FILE.py --tests TESTS.py")
    else:
        Console().print(_table(data["tools"]))


@tools_app.command("show")
def show_command(
    name: str,
    server: ServerOpt,
    api_key: KeyOpt,
    version: Annotated[
        int | None, typer.Option("--version", help="A version (default: the active one).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """A tool's source, tests and details."""
    path = _tool_path(name) + (f"/versions/{version}" if version is not None else "")
    tool = _call(server, api_key, "GET", path)
    if json_out:
        typer.echo(json.dumps(tool, indent=2))
        return
    console = Console()
    console.print(
        f"{tool['name']} version {tool['version']} (active: {tool['active_version']}), by {tool['author']}"
    )
    console.print(tool["description"], markup=False)
    console.print(tool["usage"], markup=False)
    console.print(Syntax(tool["source"], "python"))
    if tool["tests"]:
        console.print("tests:")
        console.print(Syntax(tool["tests"], "python"))


FileArg = Annotated[Path, typer.Argument(help="The tool's module (.py): one or more functions.")]
TestsOpt = Annotated[
    Path | None, typer.Option("--tests", help="Tests: def test_...(): functions, or >>> examples.")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="The tool's name (default: the file's stem).")]
DescOpt = Annotated[str, typer.Option("--description", "-d", help="One line shown in the agent's prompt.")]
PrivateOpt = Annotated[bool, typer.Option("--private", help="Only for you, not your whole tenant.")]
PackageOpt = Annotated[list[str] | None, typer.Option("--package", help="A package the tool needs (repeat).")]


@tools_app.command("save")
def save_command(
    file: FileArg,
    server: ServerOpt,
    api_key: KeyOpt,
    tests: TestsOpt = None,
    name: NameOpt = None,
    description: DescOpt = "",
    private: PrivateOpt = False,
    package: PackageOpt = None,
) -> None:
    """Save a tool (or its next version): kept only when its tests pass in a fresh session."""
    body = _body(file, tests, name, description, private, package or [])
    tool = _call(server, api_key, "POST", "/v1/tools", body)
    passed = f"{tool['tests_passed']} tests passed"
    typer.echo(f"saved {tool['name']} version {tool['version']} ({passed}): {tool['usage']}")


@tools_app.command("test")
def test_command(
    file: FileArg, server: ServerOpt, api_key: KeyOpt, tests: TestsOpt = None, name: NameOpt = None
) -> None:
    """Run a tool's tests in a fresh session of the service, saving nothing."""
    report = _call(server, api_key, "POST", "/v1/tools/test", _body(file, tests, name, "", False, []))
    typer.echo(f"passed: {report['tests_passed']} tests")


@tools_app.command("rm")
def rm_command(name: str, server: ServerOpt, api_key: KeyOpt) -> None:
    """Delete a tool and all its versions."""
    _call(server, api_key, "DELETE", _tool_path(name))
    typer.echo(f"deleted {name}")


@tools_app.command("versions")
def versions_command(name: str, server: ServerOpt, api_key: KeyOpt, json_out: JsonOpt = False) -> None:
    """Every version of a tool, newest first."""
    data = _call(server, api_key, "GET", f"{_tool_path(name)}/versions")
    if json_out:
        typer.echo(json.dumps(data, indent=2))
    else:
        Console().print(_table(data["tools"], versions=True))


@tools_app.command("rollback")
def rollback_command(name: str, version: int, server: ServerOpt, api_key: KeyOpt) -> None:
    """Make an earlier version of a tool the active one."""
    tool = _call(server, api_key, "POST", f"{_tool_path(name)}/rollback", {"version": version})
    typer.echo(f"{tool['name']}: version {tool['active_version']} is active")
