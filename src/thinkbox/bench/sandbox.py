"""``thinkbox bench sandbox``: how fast and how small sessions are, every backend side by side, in one run.

Measured (medians over many samples after a warm-up; the machine is shared and noisy):

- **warm acquire**: a session handed out by a :class:`~thinkbox.sandbox.pool.SessionPool` over the primary
  backend (the first of ``--backends``, the zygote by default), p50 and p99;
- **fresh session**: ``create_session()`` until the interpreter said hello, per backend, p50 and p99; the
  bwrap row, with the same libraries imported, is the baseline the ratios are taken against;
- **round trip** of ``1+1`` on a live session, per backend;
- **PSS per idle session**: the sum of ``Pss`` in ``/proc/PID/smaps_rollup`` over the session's host pids,
  with several sessions alive (shared pages are split between those that share them);
- **burst**: the time until 100 sessions requested at once (``asyncio.gather``) are all ready.

The result is data (:class:`SandboxBench`); :func:`render` prints it as tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from thinkbox.bench.sandbox_langs import LanguageFigures, measure_languages, render_languages
from thinkbox.errors import ThinkboxError
from thinkbox.sandbox import registry
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.pool import SessionPool
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import SessionConfig

BASELINE = "bwrap"
DOCKER = "docker"
DOCKER_RUNSC = "docker+runsc"
"""The docker backend under gVisor: ``backend+runtime`` names a backend with its ``runtime`` option."""
BURST = 100

TARGETS: dict[str, str] = {
    "warm_acquire_p50_le_1ms": "warm acquire p50 <= 1 ms",
    "fresh_session_p50_le_15ms": "fresh session p50 <= 15 ms",
    "fresh_session_30x_faster_than_bwrap": "fresh session >= 30x faster than bwrap",
    "roundtrip_p50_le_0_5ms": "round trip of 1+1 p50 <= 0.5 ms",
    "session_pss_le_15mib": "<= 15 MiB PSS per idle session",
    "burst100_le_1s": "100 sessions at once ready in <= 1 s",
    "js_fresh_session_p50_le_50ms": "fresh JavaScript session p50 <= 50 ms",
    "js_roundtrip_p50_le_1ms": "JavaScript round trip of 1+1 p50 <= 1 ms",
}

Progress = Callable[[str], None]


class Samples(BaseModel):
    """How many measurements each figure is a median of."""

    fresh: int
    warm_acquire: int
    baseline_fresh: int
    roundtrip: int
    pss_sessions: int
    burst: int
    budget_s: float | None = Field(
        default=None, description="Time after which fresh-session sampling stops early."
    )

    @classmethod
    def for_mode(cls, quick: bool) -> Samples:
        if quick:
            return cls(
                fresh=20,
                warm_acquire=40,
                baseline_fresh=3,
                roundtrip=200,
                pss_sessions=4,
                burst=BURST,
                budget_s=8.0,
            )
        return cls(fresh=60, warm_acquire=200, baseline_fresh=10, roundtrip=1000, pss_sessions=8, burst=BURST)


class BackendFigures(BaseModel):
    name: str
    available: bool
    reason: str = Field("", description="Why the backend was not measured (when unavailable).")
    session_ms_p50: float | None = None
    session_ms_p99: float | None = None
    session_samples: int = 0
    libraries_preloaded: bool | None = None
    roundtrip_ms_p50: float | None = None
    pss_mib: float | None = None
    errors: list[str] = Field(default_factory=list)


class SandboxBench(BaseModel):
    """One run of the benchmark. Times in milliseconds unless the name says otherwise."""

    primary: str
    quick: bool
    samples: Samples
    warm_acquire_ms_p50: float | None = None
    warm_acquire_ms_p99: float | None = None
    fresh_session_ms_p50: float | None = None
    fresh_session_ms_p99: float | None = None
    bwrap_session_ms_p50: float | None = None
    bwrap_session_ms_p99: float | None = None
    roundtrip_ms_p50: float | None = None
    bwrap_roundtrip_ms_p50: float | None = None
    session_pss_mib: float | None = None
    bwrap_session_pss_mib: float | None = None
    burst100_s: float | None = None
    burst_sessions: int = 0
    burst_failed: int = 0
    fresh_vs_bwrap_x: float | None = None
    warm_vs_bwrap_x: float | None = None
    pss_vs_bwrap_x: float | None = None
    js_fresh_session_ms_p50: float | None = None
    js_roundtrip_ms_p50: float | None = None
    languages: LanguageFigures | None = Field(None, description="JavaScript and shell sessions (primary).")
    backends: dict[str, BackendFigures] = Field(default_factory=dict)
    targets: dict[str, bool] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
    machine: dict[str, Any] = Field(default_factory=dict)


# -- statistics -------------------------------------------------------------------------------------
def p50(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def p99(values: Sequence[float]) -> float | None:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 samples)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def session_pss_mib(session: Session) -> float | None:
    """PSS of a session's processes in MiB, from /proc/PID/smaps_rollup; None when unknown."""
    pids = session.process.host_pids() if session.process is not None else []
    total_kib = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total_kib += int(line.split()[1])
                break
    return total_kib / 1024 if total_kib else None


# -- measurements -----------------------------------------------------------------------------------
async def _close_all(sessions: Sequence[Session]) -> None:
    async def close(session: Session) -> None:
        with contextlib.suppress(ThinkboxError, OSError):
            await session.close()

    await asyncio.gather(*(close(s) for s in sessions))


async def _fresh_sessions(
    backend: SandboxBackend,
    config: SessionConfig,
    n: int,
    *,
    warmup: int,
    errors: list[str],
    budget_s: float | None = None,
) -> list[float]:
    """Start ``n`` sessions one after another; times to ready. Sessions are closed in batches of 10.

    With ``budget_s``, sampling stops early (after at least 3 samples) once that much time is spent.
    """
    times: list[float] = []
    batch: list[Session] = []
    began = time.perf_counter()
    for i in range(warmup + n):
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - began > budget_s:
            break
        started = time.perf_counter()
        try:
            session = await backend.create_session(config)
        except ThinkboxError as exc:
            errors.append(f"create_session: {exc}")
            continue
        elapsed = (time.perf_counter() - started) * 1000
        batch.append(session)
        if i >= warmup:
            times.append(elapsed)
        if len(batch) >= 10:
            await _close_all(batch)
            batch = []
    await _close_all(batch)
    return times


async def _roundtrip(session: Session, n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm-up
        await session.execute("1+1")
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await session.execute("1+1")
        times.append((time.perf_counter() - started) * 1000)
        if result.result != "2":
            raise ThinkboxError(f"1+1 gave {result.result!r} in {session.backend.name}: {result.error}")
    return times


_PRELOAD_CHECK = "import sys; all(m in sys.modules for m in ('numpy', 'pandas', 'matplotlib.pyplot'))"


async def _roundtrip_and_pss(
    backend: SandboxBackend,
    config: SessionConfig,
    figures: BackendFigures,
    n_sessions: int,
    n_roundtrips: int,
) -> list[float]:
    """Round trips of ``1+1`` on one session, then the median PSS of ``n_sessions`` live, idle sessions.

    Also checks that the sessions had numpy, pandas and matplotlib imported before the user's code ran.
    """
    sessions: list[Session] = []
    try:
        for _ in range(n_sessions):
            session = await backend.create_session(config)
            sessions.append(session)
            await session.execute("1+1")
        figures.libraries_preloaded = (await sessions[0].execute(_PRELOAD_CHECK)).result == "True"
        times = await _roundtrip(sessions[0], n_roundtrips)
        await asyncio.sleep(0.3)  # let the sessions settle into idle
        figures.pss_mib = p50([v for v in (session_pss_mib(s) for s in sessions) if v is not None])
        return times
    finally:
        await _close_all(sessions)


async def _warm_acquire(backend: SandboxBackend, config: SessionConfig, n: int) -> list[float]:
    """Acquire from a full pool ``n`` times; the pool refills (outside the timing) between samples."""
    times: list[float] = []
    leased: list[Session] = []
    async with SessionPool(backend, size=2, config=config, refill_concurrency=1) as pool:
        for i in range(n + 10):
            async with asyncio.timeout(120):
                await pool.wait_full()
            started = time.perf_counter()
            session = await pool.acquire()
            elapsed = (time.perf_counter() - started) * 1000
            leased.append(session)
            if i >= 10:
                times.append(elapsed)
            if len(leased) >= 20:
                await _close_all(leased)
                leased = []
        await _close_all(leased)
    return times


async def _burst(backend: SandboxBackend, config: SessionConfig, n: int) -> tuple[float, int, list[str]]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(backend.create_session(config) for _ in range(n)), return_exceptions=True
    )
    elapsed = time.perf_counter() - started
    sessions = [r for r in results if isinstance(r, Session)]
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    await _close_all(sessions)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    return elapsed, len(sessions), failures


async def _open_backend(name: str) -> tuple[SandboxBackend | None, str]:
    base, _, runtime = name.partition("+")
    if base not in registry.available():
        return None, f"no {base!r} backend is registered (entry point group {registry.GROUP})"
    try:
        backend = registry.create_backend(base, **({"runtime": runtime} if runtime else {}))
    except ThinkboxError as exc:
        return None, str(exc)
    try:
        await backend.start()
    except (ThinkboxError, OSError) as exc:
        with contextlib.suppress(ThinkboxError, OSError):
            await backend.aclose()
        return None, str(exc) if isinstance(exc, ThinkboxError) else f"{type(exc).__name__}: {exc}"
    return backend, ""


async def run_sandbox_bench(
    *, quick: bool = False, backends: Sequence[str] = ("zygote", BASELINE), progress: Progress | None = None
) -> SandboxBench:
    """Run every measurement; close every session and backend it started."""
    say = progress or (lambda _msg: None)
    began = time.perf_counter()
    names = list(dict.fromkeys(backends))
    for extra in (DOCKER, DOCKER_RUNSC):
        if extra not in names:
            names.append(extra)
    samples = Samples.for_mode(quick)
    config = SessionConfig()
    report = SandboxBench(primary=names[0], quick=quick, samples=samples)
    report.machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    for name in names:
        say(f"{name}: starting the backend")
        backend, reason = await _open_backend(name)
        figures = BackendFigures(name=name, available=backend is not None, reason=reason)
        report.backends[name] = figures
        if backend is None:
            continue
        try:
            await _measure_backend(report, figures, backend, config, samples, say)
        except ThinkboxError as exc:
            figures.errors.append(str(exc))
            report.notes.append(f"{name}: measurement stopped: {exc}")
        finally:
            say(f"{name}: closing")
            await backend.aclose()
    _summarize(report)
    report.machine["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report.duration_s = time.perf_counter() - began
    return report


async def _measure_backend(
    report: SandboxBench,
    figures: BackendFigures,
    backend: SandboxBackend,
    config: SessionConfig,
    samples: Samples,
    say: Progress,
) -> None:
    primary = figures.name == report.primary
    n_fresh = samples.fresh if primary else samples.baseline_fresh
    say(f"{figures.name}: {n_fresh} fresh sessions")
    fresh = await _fresh_sessions(
        backend, config, n_fresh, warmup=2 if primary else 1, errors=figures.errors, budget_s=samples.budget_s
    )
    figures.session_samples = len(fresh)
    figures.session_ms_p50, figures.session_ms_p99 = p50(fresh), p99(fresh)
    n_rt = samples.roundtrip if primary else max(50, samples.roundtrip // 4)
    n_pss = samples.pss_sessions if primary else 2
    say(f"{figures.name}: {n_rt} round trips of 1+1, then PSS of {n_pss} idle sessions")
    figures.roundtrip_ms_p50 = p50(await _roundtrip_and_pss(backend, config, figures, n_pss, n_rt))
    if not figures.libraries_preloaded:
        report.notes.append(f"{figures.name}: sessions start without numpy/pandas/matplotlib imported")
    if not primary:
        return
    say(f"{figures.name}: {samples.warm_acquire} acquires from a warm pool")
    warm = await _warm_acquire(backend, config, samples.warm_acquire)
    report.warm_acquire_ms_p50, report.warm_acquire_ms_p99 = p50(warm), p99(warm)
    say(f"{figures.name}: {samples.burst} sessions requested at once")
    elapsed, ready, failures = await _burst(backend, config, samples.burst)
    report.burst100_s, report.burst_sessions, report.burst_failed = elapsed, ready, len(failures)
    if failures:
        report.notes.append(f"burst: {len(failures)} of {samples.burst} sessions failed, e.g. {failures[0]}")
    report.languages = await measure_languages(
        backend, n_fresh=samples.fresh, n_roundtrip=samples.roundtrip, quick=report.quick, say=say
    )
    report.js_fresh_session_ms_p50 = report.languages.js_fresh_session_ms_p50
    report.js_roundtrip_ms_p50 = report.languages.js_roundtrip_ms_p50
    report.notes.extend(f"languages: {e}" for e in report.languages.errors[:3])


def _ratio(slow: float | None, fast: float | None) -> float | None:
    return slow / fast if slow is not None and fast else None


def _summarize(report: SandboxBench) -> None:
    main = report.backends[report.primary]
    base = report.backends.get(BASELINE)
    report.fresh_session_ms_p50, report.fresh_session_ms_p99 = main.session_ms_p50, main.session_ms_p99
    report.roundtrip_ms_p50, report.session_pss_mib = main.roundtrip_ms_p50, main.pss_mib
    if base is not None and base.available:
        report.bwrap_session_ms_p50, report.bwrap_session_ms_p99 = base.session_ms_p50, base.session_ms_p99
        report.bwrap_roundtrip_ms_p50, report.bwrap_session_pss_mib = base.roundtrip_ms_p50, base.pss_mib
    elif report.primary != BASELINE:
        report.notes.append(f"bwrap baseline not measured: {base.reason if base else 'not requested'}")
    report.fresh_vs_bwrap_x = _ratio(report.bwrap_session_ms_p50, report.fresh_session_ms_p50)
    report.warm_vs_bwrap_x = _ratio(report.bwrap_session_ms_p50, report.warm_acquire_ms_p50)
    report.pss_vs_bwrap_x = _ratio(report.bwrap_session_pss_mib, report.session_pss_mib)

    def le(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    report.targets = {
        "warm_acquire_p50_le_1ms": le(report.warm_acquire_ms_p50, 1.0),
        "fresh_session_p50_le_15ms": le(report.fresh_session_ms_p50, 15.0),
        "fresh_session_30x_faster_than_bwrap": report.fresh_vs_bwrap_x is not None
        and report.fresh_vs_bwrap_x >= 30,
        "roundtrip_p50_le_0_5ms": le(report.roundtrip_ms_p50, 0.5),
        "session_pss_le_15mib": le(report.session_pss_mib, 15.0),
        "burst100_le_1s": report.burst_sessions == BURST and le(report.burst100_s, 1.0),
        "js_fresh_session_p50_le_50ms": le(report.js_fresh_session_ms_p50, 50.0),
        "js_roundtrip_p50_le_1ms": le(report.js_roundtrip_ms_p50, 1.0),
    }


# -- rendering --------------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} µs"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None else f"{_ms(a)} / {_ms(b)}"


_OPPOSITE = {"faster": "slower", "smaller": "larger"}


def _times(ratio: float | None, what: str) -> str:
    """``41x faster``; a ratio below 1 reads the other way round (``1.5x slower``)."""
    if ratio is None:
        return ""
    if ratio < 1:
        first, _, rest = what.partition(" ")
        ratio, what = 1 / ratio, " ".join(filter(None, (_OPPOSITE.get(first, first), rest)))
    return f"{ratio:,.0f}x {what}" if ratio >= 10 else f"{ratio:.1f}x {what}"


def render(report: SandboxBench, console: Console) -> None:
    """Print the run as a side-by-side table, the ratios and the targets."""
    measured = [f for f in report.backends.values() if f.available]
    table = Table(
        title=f"thinkbox sandbox benchmark{' (--quick)' if report.quick else ''}",
        title_justify="left",
        caption="every session has numpy, pandas and matplotlib imported",
        caption_justify="left",
    )
    table.add_column("measurement")
    for figures in measured:
        table.add_column(figures.name + (" (baseline)" if figures.name == BASELINE else ""), justify="right")
    table.add_column("vs bwrap", justify="right")

    def row(label: str, cells: list[str], ratio: str = "") -> None:
        table.add_row(label, *cells, ratio)

    primary_only = [f.name == report.primary for f in measured]
    row(
        "warm pool: acquire p50 / p99",
        [_pair(report.warm_acquire_ms_p50, report.warm_acquire_ms_p99) if p else "-" for p in primary_only],
        _times(report.warm_vs_bwrap_x, "faster"),
    )
    row(
        "fresh session p50 / p99",
        [_pair(f.session_ms_p50, f.session_ms_p99) for f in measured],
        _times(report.fresh_vs_bwrap_x, "faster"),
    )
    row(
        "round trip of 1+1, p50",
        [_ms(f.roundtrip_ms_p50) for f in measured],
        _times(_ratio(report.bwrap_roundtrip_ms_p50, report.roundtrip_ms_p50), "faster"),
    )
    row(
        "PSS per idle session",
        ["-" if f.pss_mib is None else f"{f.pss_mib:.1f} MiB" for f in measured],
        _times(report.pss_vs_bwrap_x, "smaller"),
    )
    burst = "-"
    if report.burst100_s is not None:
        burst = f"{report.burst100_s:.2f} s"
        if report.burst_sessions != BURST:
            burst += f" ({report.burst_sessions} of {BURST} ready)"
    row(f"{BURST} sessions at once: all ready", [burst if p else "-" for p in primary_only])
    console.print(table)
    if report.languages is not None:
        render_languages(report.languages, report.fresh_session_ms_p50, report.roundtrip_ms_p50, console)

    for figures in report.backends.values():
        if not figures.available:
            console.print(f"{figures.name}: not available ({figures.reason})")
        for error in figures.errors[:3]:
            console.print(f"[yellow]{figures.name}: {error}[/yellow]")
    if report.fresh_vs_bwrap_x is not None:
        console.print(f"fresh session: {_times(report.fresh_vs_bwrap_x, 'faster than bwrap')}")
    if report.warm_vs_bwrap_x is not None:
        console.print(
            f"warm pool acquire: {_times(report.warm_vs_bwrap_x, 'faster than a fresh bwrap session')}"
        )
    for note in report.notes:
        console.print(f"note: {note}")

    targets = Table(title="targets", title_justify="left")
    targets.add_column("target")
    targets.add_column("result", justify="center")
    for key, ok in report.targets.items():
        targets.add_row(TARGETS[key], "[green]pass[/green]" if ok else "[red]fail[/red]")
    console.print(targets)
    s = report.samples
    fresh = ", ".join(f"{f.session_samples} ({f.name})" for f in measured)
    console.print(
        f"samples: fresh {fresh}, warm acquire {s.warm_acquire}, round trip {s.roundtrip}, "
        f"PSS over {s.pss_sessions} live sessions, burst {s.burst}; "
        f"{report.duration_s:.1f} s on {report.machine.get('cpus')} CPUs, load average "
        f"{report.machine.get('loadavg_1m_at_start')} -> {report.machine.get('loadavg_1m_at_end')}"
    )
