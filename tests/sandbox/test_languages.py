"""JavaScript and shell sessions given bad input (issue 19's list), and what mixing languages in one
session keeps apart, on the default backend (the conformance behaviours run on every backend in
test_conformance_langs.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from thinkbox.errors import ConfigError, ProtocolError
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.registry import create_backend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Limits, SessionConfig, parse_language

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[SandboxBackend]:
    b = create_backend("zygote")
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def js(backend: SandboxBackend) -> AsyncIterator[Session]:
    s = await backend.create_session(SessionConfig(language="js"))
    try:
        yield s
    finally:
        await s.close()


async def test_python_code_in_a_javascript_session_is_an_error_naming_the_language(js: Session) -> None:
    r = await js.execute("import math\nprint(math.sqrt(2))")
    assert r.error is not None and r.error.type == "SyntaxError", r
    assert "ran as JavaScript" in r.error.message, r
    assert js.is_alive() and (await js.execute("2 * 21")).result == "42"


async def test_python_code_in_a_shell_session_says_it_ran_as_bash(backend: SandboxBackend) -> None:
    s = await backend.create_session(SessionConfig(language="sh"))
    try:
        r = await s.execute("import_this_module x")
        assert r.error is not None and r.exit_status == 127 and "ran as bash" in r.error.message, r
    finally:
        await s.close()


async def test_requiring_a_module_that_is_not_installed_is_an_error(js: Session) -> None:
    r = await js.execute("require('left-pad')")
    assert r.error is not None and "Cannot find module 'left-pad'" in r.error.message, r
    assert "node:internal" not in r.error.traceback, r.error.traceback


@pytest.mark.parametrize(
    "chain",
    [
        "const spin = async () => { for (;;) await null }; await spin()",  # microtasks for ever
        "const grow = async () => { await null; return grow() }; await grow()",  # and memory too
    ],
)
async def test_an_endless_promise_chain_ends_truthfully(js: Session, chain: str) -> None:
    await js.execute("globalThis.kept = 1")
    r = await js.execute(chain, timeout=2.0)
    assert r.error is not None and not r.ok, r
    if r.killed:  # no signal reaches a microtask loop: killed at the timeout (or dead of its memory)
        assert not r.state_survived and not js.is_alive(), r
        await js.restart()
        assert (await js.execute("typeof kept")).result == "'undefined'"
    else:
        assert r.timed_out and r.state_survived and (await js.execute("kept")).result == "1", r


async def test_an_error_thrown_later_by_a_timer_is_printed_not_fatal(js: Session) -> None:
    r = await js.execute("setTimeout(() => { throw new Error('late') }, 10); 'scheduled'")
    assert r.ok and r.result == "'scheduled'", r
    r = await js.execute("await new Promise(r => setTimeout(r, 100)); 'after'")
    assert r.ok and r.result == "'after'" and "Error: late" in r.stderr, r


async def test_object_literal_cell_and_redeclared_const(js: Session) -> None:
    assert (await js.execute("{a: 1, b: [2]}")).result == "{ a: 1, b: [ 2 ] }"
    assert (await js.execute("const once = 1")).ok
    r = await js.execute("const once = 2")
    assert r.error is not None and "already been declared" in r.error.message, r


async def test_cells_of_three_languages_share_files_not_variables(backend: SandboxBackend) -> None:
    s = await backend.create_session(SessionConfig())
    try:
        await s.execute("x = 'py'\nopen('note.txt', 'w').write('from python')")
        r = await s.execute("const x = 'js'; require('fs').readFileSync('note.txt', 'utf8')", language="js")
        assert r.result == "'from python'", r
        r = await s.execute("x=sh; cat note.txt; echo; echo $x", language="sh")
        assert r.stdout == "from python\nsh\n", r
        assert (await s.execute("x")).result == "'py'"
        assert (await s.execute("x", language="js")).result == "'js'"
        r = await s.execute("process.exit(0)", language="js")
        assert r.error is not None and r.error.type == "InterpreterDied" and s.is_alive(), r
        assert (await s.execute("typeof x", language="js")).result == "'undefined'"
        assert (await s.execute("x")).result == "'py'"
    finally:
        await s.close()


async def test_an_unknown_language_is_refused_naming_the_choices(backend: SandboxBackend) -> None:
    with pytest.raises(ConfigError, match="use one of py, js, sh"):
        parse_language("ruby")
    s = await backend.create_session(SessionConfig())
    try:
        with pytest.raises(ConfigError, match="py, js, sh"):
            await s.execute("puts 1", language="rb")  # type: ignore[arg-type]
    finally:
        await s.close()


async def test_a_hello_of_another_language_is_refused(backend: SandboxBackend) -> None:
    """The session checks the interpreter's hello: a js session served by a Python one is an error."""

    class Liar(type(backend)):  # type: ignore[misc]
        async def spawn(self, session_id: str, config: SessionConfig):  # type: ignore[no-untyped-def]
            return await super().spawn(session_id, config.model_copy(update={"language": "py"}))

    liar = Liar()
    try:
        with pytest.raises(ProtocolError, match="asked for a js session"):
            await liar.create_session(SessionConfig(language="js", limits=Limits()))
    finally:
        await liar.aclose()


async def test_an_engine_started_by_a_python_session_is_confined_like_it(backend: SandboxBackend) -> None:
    fields = "Uid|CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs|Seccomp"
    s = await backend.create_session(SessionConfig())
    try:
        code = f"import re\n''.join(l for l in open('/proc/self/status') if re.match(r'({fields}):', l))"
        py = (await s.execute(code)).result
        js = await s.execute(
            f"console.log(require('fs').readFileSync('/proc/self/status', 'utf8').split('\\n')"
            f".filter(l => /^({fields}):/.test(l)).join('\\n'))",
            language="js",
        )
        sh = await s.execute(f"grep -E '^({fields}):' /proc/self/status", language="sh")
        assert py is not None and "NoNewPrivs:\\t1" in py and "Seccomp:\\t2" in py, py
        expected = py.strip("'").replace("\\t", "\t").replace("\\n", "\n").strip()
        assert js.stdout.strip() == expected, (js.stdout, expected)
        assert sh.stdout.strip() == expected, (sh.stdout, expected)
    finally:
        await s.close()
