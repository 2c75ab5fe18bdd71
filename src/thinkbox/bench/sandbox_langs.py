"""The languages part of ``thinkbox bench sandbox``: JavaScript and shell sessions beside Python's.

Measured on the primary backend (the zygote by default), in the same run as the Python figures:

- **fresh JavaScript session**: ``create_session(language="js")`` until the hello, with a pre-started
  Node ready in the fork server's pool (the bench waits up to 5 s for one before each sample, as a server
  between requests would have); p50 and p99;
- **on demand**: the same with no pool (a second zygote with ``js_embryos=0``): Node starts after the
  request, which is what a pool saves (the zygote only; skipped with ``--quick``);
- **bwrap**: a JavaScript session under bubblewrap (Node started by the kernel once bwrap has set up);
- **round trip** of ``1+1`` in a JavaScript session, and a shell session's start and round trip
  (``true``);
- a fresh Python session measured the same way (pool ready before each sample), to compare like with
  like: the main table's fresh Python sessions are started back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import Language, SessionConfig

POOL_WAIT_S = 5.0
ROUNDTRIP_CODE: dict[str, tuple[str, str | None]] = {"js": ("1+1", "2"), "sh": ("true", None)}
"""Language -> (the cell timed, its expected result)."""


class LanguageFigures(BaseModel):
    py_fresh_session_ms_p50: float | None = None
    """Measured as the js and sh figures (pool ready before each sample), for the side-by-side table."""
    js_fresh_session_ms_p50: float | None = None
    js_fresh_session_ms_p99: float | None = None
    js_fresh_on_demand_ms_p50: float | None = None
    js_bwrap_fresh_session_ms_p50: float | None = None
    js_roundtrip_ms_p50: float | None = None
    sh_fresh_session_ms_p50: float | None = None
    sh_roundtrip_ms_p50: float | None = None
    js_samples: int = 0
    errors: list[str] = []


def _p(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _pool_ready(backend: SandboxBackend, kind: str) -> None:
    ready = getattr(backend, "ready_embryos", None)
    if ready is None:
        return
    deadline = time.perf_counter() + POOL_WAIT_S
    while ready(kind) < 1 and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls the backend's count
        await asyncio.sleep(0.01)


async def _fresh(
    backend: SandboxBackend, language: Language, n: int, errors: list[str], *, wait_pool: bool = True
) -> list[float]:
    times: list[float] = []
    for i in range(n + 1):  # the first is a warm-up
        if wait_pool:
            await _pool_ready(backend, "js" if language == "js" else "py")
        started = time.perf_counter()
        try:
            session = await backend.create_session(SessionConfig(language=language))
        except ThinkboxError as exc:
            errors.append(f"{language} create_session: {exc}")
            continue
        elapsed = (time.perf_counter() - started) * 1000
        await session.close()
        if i:
            times.append(elapsed)
    return times


async def _roundtrip(session: Session, n: int) -> list[float]:
    code, want = ROUNDTRIP_CODE[session.config.language]
    for _ in range(min(50, n)):
        await session.execute(code)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await session.execute(code)
        times.append((time.perf_counter() - started) * 1000)
        if not result.ok or result.result != want:
            raise ThinkboxError(f"{code} gave {result.result!r}: {result.error}")
    return times


async def measure_languages(
    backend: SandboxBackend, *, n_fresh: int, n_roundtrip: int, quick: bool, say: Callable[[str], None]
) -> LanguageFigures:
    """JavaScript and shell figures on ``backend`` (and on bwrap and an on-demand zygote, for JavaScript)."""
    figures = LanguageFigures()
    say(f"{backend.name}: {n_fresh} fresh JavaScript sessions (pre-started Node)")
    js = await _fresh(backend, "js", n_fresh, figures.errors)
    figures.js_samples = len(js)
    figures.js_fresh_session_ms_p50, figures.js_fresh_session_ms_p99 = _p(js, 0.5), _p(js, 0.99)
    say(f"{backend.name}: {n_fresh} fresh Python sessions, the same way")
    figures.py_fresh_session_ms_p50 = _p(await _fresh(backend, "py", n_fresh, figures.errors), 0.5)
    say(f"{backend.name}: {n_fresh} fresh shell sessions")
    figures.sh_fresh_session_ms_p50 = _p(await _fresh(backend, "sh", n_fresh, figures.errors), 0.5)
    for language in ("js", "sh"):
        say(f"{backend.name}: {n_roundtrip} round trips in a {language} session")
        session = await backend.create_session(SessionConfig(language=language))
        try:
            value = _p(await _roundtrip(session, n_roundtrip), 0.5)
        finally:
            await session.close()
        setattr(figures, f"{language}_roundtrip_ms_p50", value)
    if backend.name == "zygote" and not quick:
        say("zygote without a JavaScript pool: fresh sessions, Node started on demand")
        figures.js_fresh_on_demand_ms_p50 = await _other(
            "zygote", {"js_embryos": 0}, max(5, n_fresh // 4), figures.errors
        )
    say("bwrap: fresh JavaScript sessions")
    figures.js_bwrap_fresh_session_ms_p50 = await _other("bwrap", {}, 3, figures.errors)
    return figures


async def _other(name: str, options: dict[str, int], n: int, errors: list[str]) -> float | None:
    try:
        backend = registry.create_backend(name, **options)
        await backend.start()
    except (ThinkboxError, OSError) as exc:
        errors.append(f"{name}: {exc}")
        return None
    try:
        return _p(await _fresh(backend, "js", n, errors, wait_pool=False), 0.5)
    finally:
        with contextlib.suppress(ThinkboxError, OSError):
            await backend.aclose()


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value * 1000:.0f} µs" if value < 1 else f"{value:.1f} ms")


def render_languages(
    figures: LanguageFigures, py_fresh: float | None, py_roundtrip: float | None, console: Console
) -> None:
    """Python, JavaScript and shell side by side (the primary backend)."""
    table = Table(title="languages (primary backend)", title_justify="left")
    for column in ("measurement", "py", "js", "sh"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    table.add_row(
        "fresh session p50 (pool ready)",
        _ms(figures.py_fresh_session_ms_p50),
        _ms(figures.js_fresh_session_ms_p50),
        _ms(figures.sh_fresh_session_ms_p50),
    )
    table.add_row("fresh session p99", "", _ms(figures.js_fresh_session_ms_p99), "")
    table.add_row("fresh session p50, back to back (table above)", _ms(py_fresh), "", "")
    table.add_row("fresh session p50, started on demand", "", _ms(figures.js_fresh_on_demand_ms_p50), "")
    table.add_row("fresh session p50 under bwrap", "", _ms(figures.js_bwrap_fresh_session_ms_p50), "")
    table.add_row(
        "round trip p50 (1+1; sh: true)",
        _ms(py_roundtrip),
        _ms(figures.js_roundtrip_ms_p50),
        _ms(figures.sh_roundtrip_ms_p50),
    )
    console.print(table)
