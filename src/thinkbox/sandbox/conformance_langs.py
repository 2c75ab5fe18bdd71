"""The conformance suite's behaviours for the languages besides Python: JavaScript (``js``) and bash
(``sh``), and sessions that mix languages on one workspace.

    results = await run_language_conformance(backend, "js")

Each check takes the backend and a language, opens its own session(s) of that language and asserts one
behaviour of docs/protocol.md, as :mod:`thinkbox.sandbox.conformance` does for Python; the code each
check runs is in :data:`CODE`, one line per language. tests/sandbox/test_conformance_langs.py runs every
check for every language on every backend that runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.conformance import CheckResult, ConformanceError, expect
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import WORKSPACE, ExecutionResult, Language, Limits, OutputChunk, SessionConfig

OTHER_LANGUAGES: tuple[Language, ...] = ("js", "sh")

CODE: dict[str, dict[str, str]] = {
    "define": {
        "js": "let x = 41; function twice(v) { return 2 * v }",
        "sh": "x=41; twice() { echo $((2 * $1)); }",
    },
    "use": {"js": "console.log(twice(x))", "sh": "twice $x"},
    "stream": {
        "js": "console.log('first'); await new Promise(r => setTimeout(r, 1500)); console.log('second')",
        "sh": "echo first; sleep 1.5; echo second",
    },
    "both_streams": {
        "js": "console.log('to out'); console.error('to err')",
        "sh": "echo 'to out'; echo 'to err' >&2",
    },
    "fail": {
        "js": "function inner() { throw new RangeError('boom') }\ninner()",
        "sh": "ls /no/such/dir",
    },
    "busy": {"js": "while (true) {}", "sh": "while true; do :; done"},
    "busy_ignoring_interrupts": {
        # after an await the loop runs as a microtask, outside what SIGINT can break; bash: a trap of ''
        "js": "await null; while (true) {}",
        "sh": "trap '' INT; while true; do :; done",
    },
    "set_old": {"js": "globalThis.old = 1", "sh": "old=1"},
    "show_old": {"js": "console.log(typeof old)", "sh": "echo ${old-undefined}"},
    "pwd": {"js": "console.log(process.cwd())", "sh": "pwd"},
    "read_file": {
        "js": "const d = require('fs').readFileSync('data/in.bin'); console.log(d.length, d[d.length - 1])",
        "sh": "wc -c < data/in.bin",
    },
    "write_file": {
        "js": "require('fs').writeFileSync('out.txt', 'made by js')",
        "sh": "printf 'made by sh' > out.txt",
    },
    "flood": {
        "js": "process.stdout.write('x'.repeat(300000) + '\\n'); console.log('END')",
        "sh": "head -c 300000 /dev/zero | tr '\\0' x; echo; echo END",
    },
    "small": {"js": "console.log('small')", "sh": "echo small"},
    "die": {"js": "process.exit(7)", "sh": "exit 7"},
    "one_plus_one": {"js": "console.log(1 + 1)", "sh": "echo $((1 + 1))"},
}
"""Behaviour -> language -> the code a check runs (what it prints is what the check expects)."""

LanguageCheck = Callable[[SandboxBackend, Language], Awaitable[None]]
LANGUAGE_CHECKS: dict[str, LanguageCheck] = {}


def check(fn: LanguageCheck) -> LanguageCheck:
    LANGUAGE_CHECKS[fn.__name__] = fn
    return fn


async def run_language_conformance(
    backend: SandboxBackend, language: Language, *, only: Iterable[str] | None = None
) -> list[CheckResult]:
    """Every check (or those in ``only``) for ``language`` on ``backend``; failures are results."""
    results = []
    await backend.start()
    for name in only or LANGUAGE_CHECKS:
        started = time.perf_counter()
        try:
            await LANGUAGE_CHECKS[name](backend, language)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, ConformanceError) else f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(name, False, detail, (time.perf_counter() - started) * 1000))
        else:
            results.append(CheckResult(name, True, "", (time.perf_counter() - started) * 1000))
    return results


@contextlib.asynccontextmanager
async def open_session(backend: SandboxBackend, language: Language, **limits: Any) -> AsyncIterator[Session]:
    session = await backend.create_session(SessionConfig(language=language, limits=Limits(**limits)))
    try:
        yield session
    finally:
        await session.close()


async def run(session: Session, behaviour: str, **kwargs: Any) -> ExecutionResult:
    return await session.execute(CODE[behaviour][session.config.language], **kwargs)


async def run_ok(session: Session, behaviour: str, **kwargs: Any) -> ExecutionResult:
    result = await run(session, behaviour, **kwargs)
    expect(result.ok, f"{behaviour} ({session.config.language}) runs without error", result)
    return result


# -- checks -------------------------------------------------------------------------------------------
@check
async def hello_names_the_language(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        expect(s.hello.get("language") == language, f"the hello says {language}: {s.hello}")


@check
async def state_persists_between_executions(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        await run_ok(s, "define")
        r = await run_ok(s, "use")
        expect(r.stdout == "82\n", "variables and functions persist", r)


@check
async def value_of_last_expression_is_the_result(backend: SandboxBackend, language: Language) -> None:
    if language != "js":
        return  # a shell cell has no value: its output and exit status are the result
    async with open_session(backend, language) as s:
        r = await s.execute("const o = {a: [1, 2]}; o.a.length + 40")
        expect(r.ok and r.result == "42", "the last expression's value is the result", r)
        r = await s.execute("const v = await Promise.resolve('done'); v")
        expect(r.ok and r.result == "'done'", "top-level await gives its value", r)
        r = await s.execute("let nothing = 1")
        expect(r.ok and r.result is None, "a declaration has no result", r)


@check
async def stdout_streams_before_the_execution_ends(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        arrivals: list[tuple[float, str]] = []
        started = time.perf_counter()

        def seen(chunk: OutputChunk) -> None:
            arrivals.append((time.perf_counter() - started, chunk.text))

        r = await run(s, "stream", on_output=seen)
        total = time.perf_counter() - started
        expect(r.ok and r.stdout == "first\nsecond\n", "both lines arrive", r)
        first = next((t for t, text in arrivals if "first" in text), None)
        expect(first is not None and first < total - 1.0, f"'first' arrived while running: {arrivals}", r)


@check
async def stderr_is_separate_from_stdout(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        r = await run_ok(s, "both_streams")
        expect(r.stdout == "to out\n" and r.stderr == "to err\n", "stdout and stderr apart", r)


@check
async def error_is_returned_as_data_and_the_session_stays_usable(
    backend: SandboxBackend, language: Language
) -> None:
    async with open_session(backend, language) as s:
        await run_ok(s, "define")
        r = await run(s, "fail")
        expect(r.error is not None and not r.killed and r.state_survived, "an error is data", r)
        if language == "js":
            assert r.error is not None
            expect(r.error.type == "RangeError" and "boom" in r.error.message, "the error's type", r)
            expect("inner" in r.error.traceback and "node:" not in r.error.traceback, "user frames only", r)
        else:
            expect(r.exit_status == 2 and r.error is not None and "exit status 2" in r.error.message, "", r)
        r = await run_ok(s, "use")
        expect(r.stdout == "82\n", "the state is kept after an error", r)


@check
async def interrupt_stops_the_code_and_keeps_state(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        await run_ok(s, "define")
        task = asyncio.create_task(run(s, "busy"))
        await asyncio.sleep(0.5)
        s.interrupt()
        r = await asyncio.wait_for(task, 10)
        expect(r.interrupted and r.state_survived and not r.killed, "interrupted, state kept", r)
        r = await run_ok(s, "use")
        expect(r.stdout == "82\n", "variables survive an interrupt", r)


@check
async def timeout_interrupts_and_says_state_survived(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        await run_ok(s, "define")
        r = await run(s, "busy", timeout=1.0)
        expect(r.timed_out and r.interrupted and r.state_survived and not r.killed, "timeout", r)
        r = await run_ok(s, "use")
        expect(r.stdout == "82\n", "state kept after an interrupted timeout", r)


@check
async def timeout_kills_code_that_ignores_the_interrupt_and_says_state_was_lost(
    backend: SandboxBackend, language: Language
) -> None:
    async with open_session(backend, language, kill_grace_s=1.0) as s:
        r = await run(s, "busy_ignoring_interrupts", timeout=1.0)
        expect(r.timed_out and r.killed and not r.state_survived, "timeout -> killed, state lost", r)
        expect(not s.is_alive(), "the session is not alive after the kill")
        await s.restart()
        r = await run_ok(s, "one_plus_one")
        expect(r.stdout == "2\n", "restart after a kill gives a working interpreter", r)


@check
async def restart_gives_a_fresh_interpreter(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        await run_ok(s, "set_old")
        await s.restart()
        r = await run_ok(s, "show_old")
        expect(r.stdout == "undefined\n", "nothing defined before the restart is left", r)


@check
async def cwd_is_the_workspace(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        r = await run_ok(s, "pwd")
        expect(r.stdout == f"{WORKSPACE}\n", f"the working directory is {WORKSPACE}", r)
        if language == "sh":
            await s.execute("mkdir -p sub && cd sub")
            r = await run_ok(s, "pwd")
            expect(r.stdout == f"{WORKSPACE}/sub\n", "cd persists across cells", r)


@check
async def files_round_trip(backend: SandboxBackend, language: Language) -> None:
    blob = bytes(range(256)) * 4
    async with open_session(backend, language) as s:
        await s.put_file("data/in.bin", blob)
        r = await run_ok(s, "read_file")
        want = {"js": f"{len(blob)} 255\n", "sh": f"{len(blob)}\n"}[language]
        expect(r.stdout == want, "the code sees the file put_file wrote", r)
        await run_ok(s, "write_file")
        got = await s.get_file("out.txt")
        expect(got == f"made by {language}".encode(), f"get_file reads what the code wrote: {got!r}")


@check
async def large_output_is_cut_with_a_marker(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language, output_bytes=10_000) as s:
        r = await run_ok(s, "flood")
        expect(r.output_truncated and "thinkbox cut" in r.stdout, "cut, with a marker", r)
        expect(len(r.stdout) < 40_000, f"the kept output is bounded ({len(r.stdout)} chars)", r)
        expect(r.stdout.rstrip().endswith("END"), "the tail of the output is kept", r)
        r = await run_ok(s, "small")
        expect(r.stdout == "small\n" and not r.output_truncated, "the next execution is not cut", r)


@check
async def death_is_reported_and_restart_works(backend: SandboxBackend, language: Language) -> None:
    async with open_session(backend, language) as s:
        r = await run(s, "die")
        expect(r.killed and not r.state_survived and r.error is not None, "exit -> killed result", r)
        assert r.error is not None
        expect("7" in r.error.message, f"the error says how it ended: {r.error.message}", r)
        expect(not s.is_alive(), "is_alive() is False after the interpreter died")
        await s.restart()
        r = await run_ok(s, "one_plus_one")
        expect(r.stdout == "2\n", "restart after death gives a working interpreter", r)


@check
async def languages_share_one_workspace(backend: SandboxBackend, language: Language) -> None:
    """A Python session runs a cell of ``language`` on its files, and the other way round."""
    async with open_session(backend, "py") as s:
        await s.execute("open('numbers.txt', 'w').write('\\n'.join(str(i) for i in range(10)))\nkept = 5")
        code = {
            "js": "const fs = require('fs');\n"
            "const n = fs.readFileSync('numbers.txt', 'utf8').split('\\n').map(Number);\n"
            "fs.writeFileSync('sum.txt', String(n.reduce((a, b) => a + b)));\nn.length",
            "sh": "awk '{s += $1} END {print s}' numbers.txt > sum.txt",
        }[language]
        r = await s.execute(code, language=language)
        expect(r.ok, f"a {language} cell runs in a py session", r)
        r = await s.execute("int(open('sum.txt').read()), kept")
        expect(r.result == "(45, 5)", f"Python reads what {language} wrote; its own state is kept", r)
        r = await s.execute(CODE["define"][language], language=language)
        r = await s.execute(CODE["use"][language], language=language)
        expect(r.stdout == "82\n", f"the {language} interpreter keeps its state between cells", r)
