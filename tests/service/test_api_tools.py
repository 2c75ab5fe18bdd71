"""The tool store through the real HTTP API and real sandbox sessions: a tool is saved only when its tests
pass in a fresh session; saved, it is importable (read-only) from a new session of another user of the
tenant and does not exist for another tenant; versions, rollback, private tools, bad input. SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Running

SLUG = '''\
import re


def slugify(text: str, sep: str = "-") -> str:
    """Lower-case words of ``text`` joined by ``sep``.

    >>> slugify("Hello, World")
    'hello-world'
    """
    return sep.join(re.findall(r"[a-z0-9]+", text.lower()))
'''
SLUG_TESTS = 'def test_words():\n    assert slugify("A  b!c") == "a-b-c"\n'


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def save(
    client: httpx.Client, name: str, source: str = SLUG, tests: str = SLUG_TESTS, **extra: Any
) -> httpx.Response:
    body = {
        "name": name,
        "description": "Make a URL slug of a text",
        "source": source,
        "tests": tests,
        **extra,
    }
    # json.dumps escapes what UTF-8 cannot carry (a lone surrogate), as a client in another language could
    return client.post("/v1/tools", content=json.dumps(body), headers={"Content-Type": "application/json"})


def run_code(client: httpx.Client, code: str) -> dict[str, Any]:
    """``code`` in a new session of the client's user; the execution's result."""
    session = client.post("/v1/sessions")
    assert session.status_code == 201, session.text
    sid = session.json()["id"]
    try:
        response = client.post(f"/v1/sessions/{sid}/execute", json={"code": code})
        assert response.status_code == 200, response.text
        return dict(response.json())
    finally:
        client.delete(f"/v1/sessions/{sid}")


@pytest.fixture
def clients(running: Running) -> Iterator[tuple[httpx.Client, httpx.Client, httpx.Client]]:
    with (
        running.client(running.alice) as a,
        running.client(running.bob) as b,
        running.client(running.carol) as c,
    ):
        yield a, b, c


def test_a_tool_whose_tests_fail_is_refused_with_the_failures(running: Running, clients: Any) -> None:
    alice, _, _ = clients
    name = unique("slug")
    tests = SLUG_TESTS + '\n\ndef test_wrong():\n    assert slugify("X Y") == "x_y", "expected underscores"\n'
    response = save(alice, name, tests=tests)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "tool_tests_failed"
    assert "1 of 3 tests" in error["message"] and "test_wrong" in error["message"]
    (failure,) = error["failures"]
    assert failure["test"] == "test_wrong" and "expected underscores" in failure["error"]
    assert alice.get(f"/v1/tools/{name}").status_code == 404
    assert name not in [t["name"] for t in alice.get("/v1/tools").json()["tools"]]


@pytest.mark.parametrize(
    ("name", "source", "tests", "code", "needle"),
    [
        ("my-tool", SLUG, SLUG_TESTS, "invalid_tool", "not a Python identifier"),
        ("json", SLUG, SLUG_TESTS, "invalid_tool", "standard or installed module"),
        ("os", SLUG, SLUG_TESTS, "invalid_tool", "standard or installed module"),
        ("save_tool", SLUG, SLUG_TESTS, "invalid_tool", "taken by the tools package itself"),
        ("t_syntax", "def f(:\n    pass\n", SLUG_TESTS, "invalid_tool", "does not parse"),
        ("t_nothing", "x = 1\n", "def test_x():\n    assert True\n", "invalid_tool", "defines no function"),
        ("t_untested", "def f():\n    return 1\n", "", "invalid_tool", "has no tests"),
        ("t_surrogate", "def f():\n    return '\ud800'\n", SLUG_TESTS, "invalid_request", "unicode string"),
        (
            "t_exits",
            SLUG,
            "def test_exit():\n    import os\n    os._exit(3)\n",
            "tool_tests_failed",
            "could not finish",
        ),
        ("t_nul", "def f():\n    return '\x00'\n", SLUG_TESTS, "invalid_tool", "NUL character"),
        (
            "t_noimport",
            "import no_such_module_zz\n\ndef f():\n    return 1\n",
            "def test_f():\n    assert f() == 1\n",
            "tool_import_failed",
            "does not import",
        ),
    ],
)
def test_bad_tools_are_refused_saying_what_to_fix(
    running: Running, clients: Any, name: str, source: str, tests: str, code: str, needle: str
) -> None:
    alice, _, _ = clients
    response = save(alice, name, source=source, tests=tests)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and needle in error["message"], error
    if code == "tool_import_failed":
        assert "no_such_module_zz" in error["failures"][0]["error"]


def test_tests_that_run_forever_are_stopped_and_the_tool_refused(running: Running, clients: Any) -> None:
    alice, _, _ = clients
    store = running.server.service.tools
    store.timeout_s, before = 2.0, store.timeout_s
    try:
        response = save(alice, unique("loop"), tests="def test_forever():\n    while True:\n        pass\n")
    finally:
        store.timeout_s = before
    assert response.status_code == 422, response.text
    assert "ran longer than 2 s" in response.json()["error"]["message"]


def test_a_saved_tool_is_importable_by_another_user_of_the_tenant_and_invisible_to_another_tenant(
    running: Running, clients: Any
) -> None:
    alice, bob, carol = clients
    name = unique("slug")
    response = save(alice, name)
    assert response.status_code == 201, response.text
    tool = response.json()
    assert tool["version"] == tool["active_version"] == 1 and tool["author"] == "alice"
    assert tool["tests_passed"] == 2  # the test function and the docstring's example
    assert tool["functions"] == [
        {
            "name": "slugify",
            "signature": "(text: str, sep: str='-') -> str",
            "doc": "Lower-case words of ``text`` joined by ``sep``.\n\n"
            ">>> slugify(\"Hello, World\")\n'hello-world'",
        }
    ]
    assert tool["usage"] == f"from tools.{name} import slugify"

    result = run_code(bob, f"from tools.{name} import slugify\nprint(slugify('Tool Store, item 2'))")
    assert result["stdout"] == "tool-store-item-2\n", result
    listed_inside = run_code(
        bob, f"import tools\nprint({name!r} in tools.available(), tools.{name}.slugify('X'))"
    )
    assert listed_inside["stdout"] == "True x\n", listed_inside
    listed = bob.get("/v1/tools").json()["tools"]
    assert name in [t["name"] for t in listed] and bob.get(f"/v1/tools/{name}").json()["source"] == SLUG

    # mounted read-only: a session cannot change the tenant's tools
    write = run_code(
        bob,
        f"import os\nprint(bool(os.statvfs('/workspace/.tools').f_flag & os.ST_RDONLY))\n"
        f"open('/workspace/.tools/tools/{name}.py', 'a').write('x = 1')",
    )
    assert write["stdout"] == "True\n" and write["error"]["type"] in ("PermissionError", "OSError"), write

    assert carol.get(f"/v1/tools/{name}").status_code == 404
    assert name not in [t["name"] for t in carol.get("/v1/tools").json()["tools"]]
    assert carol.delete(f"/v1/tools/{name}").status_code == 404
    other = run_code(carol, f"from tools.{name} import slugify")
    assert other["error"]["type"] == "ModuleNotFoundError", other


def test_versions_are_kept_and_rollback_makes_an_earlier_one_active(running: Running, clients: Any) -> None:
    alice, bob, _ = clients
    name = unique("scale")
    v1 = "def scale(x):\n    return x * 2\n"
    v2 = "def scale(x):\n    return x * 3\n"
    assert save(alice, name, source=v1, tests="def test_s():\n    assert scale(1) == 2\n").status_code == 201
    second = save(bob, name, source=v2, tests="def test_s():\n    assert scale(1) == 3\n")
    assert second.status_code == 201 and second.json()["version"] == 2 and second.json()["author"] == "bob"
    assert run_code(alice, f"from tools.{name} import scale\nprint(scale(5))")["stdout"] == "15\n"
    again = save(bob, name, source=v2, tests="def test_s():\n    assert scale(1) == 3\n")
    assert again.status_code == 201 and again.json()["version"] == 2  # the same tool: no new version

    versions = alice.get(f"/v1/tools/{name}/versions").json()["tools"]
    assert [(v["version"], v["author"], v["active_version"]) for v in versions] == [
        (2, "bob", 2),
        (1, "alice", 2),
    ]
    assert alice.get(f"/v1/tools/{name}/versions/1").json()["source"] == v1
    assert alice.get(f"/v1/tools/{name}/versions/9").status_code == 404

    back = alice.post(f"/v1/tools/{name}/rollback", json={"version": 1})
    assert back.status_code == 200 and back.json()["active_version"] == 1 and back.json()["source"] == v1
    assert run_code(bob, f"from tools.{name} import scale\nprint(scale(5))")["stdout"] == "10\n"
    assert alice.post(f"/v1/tools/{name}/rollback", json={"version": 7}).status_code == 404

    assert alice.delete(f"/v1/tools/{name}").status_code == 204
    assert alice.get(f"/v1/tools/{name}").status_code == 404
    gone = run_code(bob, f"import tools.{name}")
    assert gone["error"]["type"] == "ModuleNotFoundError"


def test_a_private_tool_is_its_owners_alone(running: Running, clients: Any) -> None:
    alice, bob, _ = clients
    name = unique("mine")
    response = save(alice, name, private=True)
    assert response.status_code == 201 and response.json()["private"] is True
    assert run_code(alice, f"from tools.{name} import slugify\nprint(slugify('A B'))")["stdout"] == "a-b\n"
    assert bob.get(f"/v1/tools/{name}").status_code == 404
    assert run_code(bob, f"import tools.{name}")["error"]["type"] == "ModuleNotFoundError"
    taken = save(bob, name)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "name_taken"
    shared = save(alice, name)  # her private tool cannot become the tenant's by a save
    assert shared.status_code == 409 and shared.json()["error"]["code"] == "visibility_conflict"


def test_testing_a_tool_saves_nothing(running: Running, clients: Any) -> None:
    alice, _, _ = clients
    name = unique("dry")
    body = {"name": name, "description": "", "source": SLUG, "tests": SLUG_TESTS}
    response = alice.post("/v1/tools/test", json=body)
    assert response.status_code == 200 and response.json() == {"passed": True, "tests_passed": 2}
    assert alice.get(f"/v1/tools/{name}").status_code == 404
    unknown = alice.post("/v1/tools", json={**body, "colour": "blue"})
    assert unknown.status_code == 422 and "colour" in unknown.json()["error"]["message"]


def test_the_folders_sessions_mount_are_rewritten_from_the_database(running: Running, clients: Any) -> None:
    alice, _, _ = clients
    name = unique("synced")
    assert save(alice, name).status_code == 201
    folder = running.data_dir / "tools" / "acme" / "shared" / "tools"
    (folder / f"{name}.py").unlink()
    (folder / "stale_tool.py").write_text("def f():\n    return 1\n")
    running.server.service.tools.sync()  # as at a start
    assert (folder / f"{name}.py").read_text() == SLUG
    assert not (folder / "stale_tool.py").exists()
    assert oct((running.data_dir / "tools").stat().st_mode & 0o777) == "0o700"


def test_a_session_already_running_imports_a_tool_saved_after_it_started(
    running: Running, clients: Any
) -> None:
    alice, bob, _ = clients
    name = unique("late")
    sid = bob.post("/v1/sessions").json()["id"]
    try:
        before = bob.post(
            f"/v1/sessions/{sid}/execute", json={"code": "import tools\nprint(tools.available())"}
        )
        assert name not in before.json()["stdout"]
        assert save(alice, name).status_code == 201
        code = f"from tools.{name} import slugify\nprint(slugify('Late Tool'))"
        after = bob.post(f"/v1/sessions/{sid}/execute", json={"code": code}).json()
        assert after["stdout"] == "late-tool\n", after
    finally:
        bob.delete(f"/v1/sessions/{sid}")
