"""``thinkbox bench service``: the service under load, its cost per step against the in-process loop, a crash.

It starts its own ``thinkbox serve`` (a child process on a free loopback port, a fresh data dir, SQLite,
the sandbox backend of the settings) with the scripted model in ``by_step`` mode, so that every run gets
the same script: ``--steps`` code steps, then the answer. Users are made in its database with the accounts
module, their run limits raised so that every run is accepted. Rounds, in order: runs driven in-process
with ``run_agent`` (the baseline of a step); runs one after another on the idle server; ``--runs`` runs at
once, each followed over SSE by an :class:`~thinkbox.client.AsyncClient` of its user; a crash round, where
the server is killed with SIGKILL while runs whose steps sleep are going, and started again on the same
data dir and port (the followers reconnect by themselves with ``Last-Event-ID``). How each figure is
taken is in :data:`METHOD`, which the output repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from thinkbox.agent.events import StepStarted
from thinkbox.agent.loop import run_agent
from thinkbox.bench.sandbox import p50, p99
from thinkbox.bench.service_server import (
    QUESTION,
    ChildServer,
    Seen,
    database_url,
    follow_all,
    free_port,
    gapless,
    lost_events,
    machine,
    make_users,
    ms_between,
    step_intervals,
    unanswered,
    write_script,
)
from thinkbox.client import AsyncClient
from thinkbox.config import Settings, load_settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox import registry
from thinkbox.sandbox.types import SessionConfig

Progress = Callable[[str], None]
IDLE_RUNS = 20
CRASH_RUNS = 40
CRASH_STEP_CODE = "import time; time.sleep(0.3); print({k})"
LOAD_TIMEOUT_S = 120.0
METHOD = {
    "latencies": "from sending the POST /v1/runs to receiving the event over SSE, in the bench process",
    "idle_first_event_ms": f"median of {IDLE_RUNS} runs one after another on the idle server (warm)",
    "step": "from one step_started to the next, by the events' own timestamps (taken where the loop makes "
    f"them): in the service for the idle runs, in this process for {IDLE_RUNS} runs through run_agent with "
    "the same scripted model and backend; overhead = difference of the medians: what the service adds in a "
    "step (the shared-model gate, the journal, the quota check after each execution); delivery is in the "
    "latencies",
    "lost_events": "ids of 1..last that never came, plus stored events (RunInfo.events) past the last one",
    "duplicated_events": "ids received a second time (the client drops and counts them)",
    "stuck_runs": f"runs without run_finished {LOAD_TIMEOUT_S:g} s after the start",
    "crash_resumed_fraction": "runs whose steps sleep 0.3 s; kill -9 once all are submitted and "
    "half have begun step 2; of the runs whose follower had no run_finished at the kill, the share that end "
    "succeeded with ids 1..last each once after the restart on the same data dir",
    "load_phases_ms_p50": "from the run's row (created_at, started_at, finished_at) and its run_started "
    "event: waiting for a run slot (service.active_runs), getting its sandbox session, the rest",
    "peak_rss_mib": "VmHWM of the server process after the load, sandbox processes not included",
    "tree_pss_mib_max": "the most PSS summed over the server and every process below it (the sandboxes), "
    "sampled every second during the load (PSS splits a shared page between its sharers)",
}
CORRECTNESS = ("no_lost_duplicated_or_stuck", "crash_resumed_100pct")
"""The targets that are behaviour, not speed: ``thinkbox bench service`` fails when one is missed."""
TARGETS = {
    "no_lost_duplicated_or_stuck": "0 events lost, 0 duplicated, 0 runs stuck",
    "total_le_20s": "all runs done in <= 20 s",
    "step_overhead_p50_le_2ms": "added latency per step p50 <= 2 ms",
    "crash_resumed_100pct": "100 % of interrupted runs finish after the restart",
    "idle_first_event_le_50ms": "first event on an idle server <= 50 ms",
}


class ServiceBench(BaseModel):
    """One run of the benchmark; times in milliseconds unless the name says otherwise."""

    runs: int
    users: int
    tenants: int
    steps: int
    succeeded: int = 0
    runs_per_s: float | None = None
    total_s: float | None = None
    lost_events: int = 0
    duplicated_events: int = 0
    stuck_runs: int = 0
    reconnects: int = 0
    events_per_run: float | None = None
    idle_first_event_ms: float | None = None
    first_event_ms_p50: float | None = None
    first_event_ms_p99: float | None = None
    terminal_ms_p50: float | None = None
    terminal_ms_p99: float | None = None
    step_ms_service_p50: float | None = Field(None, description="Idle server, as received over SSE.")
    step_ms_in_process_p50: float | None = None
    step_overhead_ms_p50: float | None = None
    step_ms_under_load_p50: float | None = None
    load_phases_ms_p50: dict[str, float | None] = Field(
        default_factory=dict, description="Where a run's time goes under load, by the server's clock."
    )
    crash_runs: int = 0
    crash_interrupted: int = 0
    crash_resumed: int = Field(0, description="Interrupted runs that said run_resumed after the restart.")
    crash_succeeded: int = 0
    crash_resumed_fraction: float | None = None
    crash_lost_events: int = 0
    crash_duplicated_events: int = 0
    crash_stuck_runs: int = 0
    restart_s: float | None = None
    peak_rss_mib: float | None = None
    tree_pss_mib_max: float | None = Field(None, description="Server and sandboxes, sampled during the load.")
    service_settings: dict[str, Any] = Field(default_factory=dict)
    targets: dict[str, bool] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    method: dict[str, str] = Field(default_factory=dict)
    duration_s: float = 0.0
    machine: dict[str, Any] = Field(default_factory=dict)


# -- rounds -------------------------------------------------------------------------------------------
async def _idle_round(clients: list[AsyncClient], report: ServiceBench) -> list[float]:
    await follow_all(clients[:1], [Seen(0)], LOAD_TIMEOUT_S)  # warm-up
    seen = [Seen(0) for _ in range(IDLE_RUNS)]
    for s in seen:
        await follow_all(clients[:1], [s], LOAD_TIMEOUT_S)
    report.idle_first_event_ms = p50([m for s in seen if (m := ms_between(s.submitted, s.first)) is not None])
    report.errors += [f"idle run: {s.error}" for s in seen if s.error]
    return step_intervals(seen)


async def _in_process(settings: Settings, script: Path, runs: int) -> list[float]:
    """The same runs through ``run_agent`` in this process: step durations as the loop yields them."""
    backend = registry.create_backend(settings.sandbox.backend)
    await backend.start()
    seen = []
    try:
        for _ in range(runs + 1):  # the first is a warm-up
            session = await backend.create_session(SessionConfig(limits=settings.sandbox.limits))
            model, s = ScriptedModel.from_file(script), Seen(0)
            try:
                async for event in run_agent(QUESTION, model=model, session=session, settings=settings):
                    if isinstance(event, StepStarted):
                        s.steps.append(event.ts)
            finally:
                await session.close()
            seen.append(s)
    finally:
        await backend.aclose()
    return step_intervals(seen[1:])


async def _load_round(server: ChildServer, clients: list[AsyncClient], report: ServiceBench) -> None:
    seen = [Seen(i % len(clients)) for i in range(report.runs)]
    started = time.perf_counter()
    sampling = asyncio.ensure_future(_sample_memory(server, report))
    try:
        await follow_all(clients, seen, LOAD_TIMEOUT_S)
    finally:
        sampling.cancel()
    ended = [s.terminal for s in seen if s.terminal is not None]
    report.total_s = round((max(ended) if ended else time.perf_counter()) - started, 3)
    report.runs_per_s = round(len(ended) / report.total_s, 2) if report.total_s else None
    report.succeeded = sum(s.status == "succeeded" for s in seen)
    report.stuck_runs = sum(s.terminal is None for s in seen)
    report.lost_events = sum(lost_events(s) for s in seen)
    report.duplicated_events = sum(s.duplicates for s in seen)
    report.reconnects = sum(s.reconnects for s in seen)
    report.events_per_run = round(sum(len(s.ids) for s in seen) / len(seen), 1) if seen else None
    firsts = [m for s in seen if (m := ms_between(s.submitted, s.first)) is not None]
    terminals = [m for s in seen if (m := ms_between(s.submitted, s.terminal)) is not None]
    report.first_event_ms_p50, report.first_event_ms_p99 = p50(firsts), p99(firsts)
    report.terminal_ms_p50, report.terminal_ms_p99 = p50(terminals), p99(terminals)
    report.step_ms_under_load_p50 = p50(step_intervals(seen))
    phases = [s.phases for s in seen if s.phases is not None]
    for i, name in enumerate(("waiting_for_a_run_slot", "starting_its_session", "running")):
        report.load_phases_ms_p50[name] = p50([p[i] * 1000 for p in phases])
    report.errors += [f"load run {s.run_id or '(not created)'}: {s.error}" for s in seen if s.error][:5]
    report.errors += [unanswered(s, "load") for s in seen if s.status and s.status != "succeeded"][:5]


async def _sample_memory(server: ChildServer, report: ServiceBench) -> None:
    while True:
        pss = await asyncio.to_thread(server.tree_pss_mib)
        report.tree_pss_mib_max = max(report.tree_pss_mib_max or 0.0, pss or 0.0)
        await asyncio.sleep(1.0)


async def _crash_round(server: ChildServer, keys: list[str], report: ServiceBench) -> None:
    clients = [AsyncClient(server.url, key, reconnect_s=LOAD_TIMEOUT_S) for key in keys]
    seen = [Seen(i % len(clients)) for i in range(report.crash_runs)]
    try:
        changed = asyncio.Event()
        following = asyncio.ensure_future(follow_all(clients, seen, LOAD_TIMEOUT_S, changed))
        deadline = time.perf_counter() + LOAD_TIMEOUT_S / 2
        while not (all(s.run_id for s in seen) and sum(len(s.steps) >= 2 for s in seen) >= len(seen) / 2):
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.perf_counter()))
            if time.perf_counter() >= deadline:
                break
        await asyncio.to_thread(server.kill)
        interrupted = [s for s in seen if s.terminal is None]
        report.restart_s = round(await asyncio.to_thread(server.start), 2)
        await following
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    report.crash_interrupted = len(interrupted)
    report.crash_resumed = sum(s.resumed for s in interrupted)
    report.crash_succeeded = sum(s.status == "succeeded" and gapless(s) for s in interrupted)
    if interrupted:
        report.crash_resumed_fraction = round(report.crash_succeeded / len(interrupted), 4)
    else:
        report.errors.append("crash round: no run was still going at the kill; nothing was measured")
    report.crash_lost_events = sum(lost_events(s) for s in seen)
    report.crash_duplicated_events = sum(s.duplicates for s in seen)
    report.crash_stuck_runs = sum(s.terminal is None for s in seen)
    report.errors += [f"crash run {s.run_id or '(not created)'}: {s.error}" for s in seen if s.error][:5]
    report.errors += [unanswered(s, "crash") for s in seen if s.status and s.status != "succeeded"][:5]


# -- the whole --------------------------------------------------------------------------------------
async def run_service_bench(
    *, runs: int = 200, users: int = 20, tenants: int = 4, steps: int = 3, progress: Progress = print
) -> ServiceBench:
    report = ServiceBench(
        runs=runs, users=users, tenants=min(tenants, users), steps=steps, crash_runs=min(CRASH_RUNS, runs)
    )
    report.machine, report.method = machine(), dict(METHOD)
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="thinkbox-bench-service-"))
    try:
        await _measure(root, report, progress)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.duration_s = round(time.perf_counter() - began, 1)
    report.machine["loadavg_1m_at_end"] = os.getloadavg()[0]
    _judge(report)
    return report


async def _measure(root: Path, report: ServiceBench, progress: Progress) -> None:
    steps, runs = range(1, report.steps + 1), str(report.runs)
    load_script = write_script(root / "load.json", [f"x{k} = {k} * 7\nprint(x{k})" for k in steps])
    crash_script = write_script(root / "crash.json", [CRASH_STEP_CODE.format(k=k) for k in steps])
    data_dir = root / "data"
    settings = load_settings(data_dir=data_dir, model={"provider": "scripted", "script": load_script})
    report.service_settings = {
        "backend": settings.sandbox.backend,
        "warm_sessions": settings.service.warm_sessions,
        "active_runs": settings.service.active_runs,
        "model_concurrency": settings.service.model_concurrency,
        "database": "sqlite",
    }
    progress(f"in-process: a warm-up run, then {IDLE_RUNS} runs through run_agent")
    in_process = await _in_process(settings, load_script, IDLE_RUNS)
    report.step_ms_in_process_p50 = p50(in_process)
    progress(f"accounts: {report.tenants} tenants, {report.users} users")
    keys = await asyncio.to_thread(make_users, data_dir, report.tenants, report.users)
    env = {**os.environ, "THINKBOX_MODEL__PROVIDER": "scripted", "THINKBOX_MODEL__SCRIPT": str(load_script),
           "THINKBOX_SERVICE__RUNS_PER_USER": runs, "THINKBOX_SERVICE__RUNS_PER_TENANT": runs,
           "THINKBOX_SERVICE__DATABASE_URL": database_url(data_dir)}  # fmt: skip
    server = ChildServer(data_dir, free_port(), env)
    try:
        progress("starting thinkbox serve")
        await asyncio.to_thread(server.start)
        clients = [AsyncClient(server.url, key, timeout=60) for key in keys]
        try:
            progress(f"idle: a warm-up run, then {IDLE_RUNS} runs one after another")
            report.step_ms_service_p50 = p50(await _idle_round(clients, report))
            progress(f"load: {report.runs} runs at once by {report.users} users")
            await _load_round(server, clients, report)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        report.peak_rss_mib = server.peak_rss_mib()
        await asyncio.to_thread(server.stop)
        server.env = {**env, "THINKBOX_MODEL__SCRIPT": str(crash_script)}
        await asyncio.to_thread(server.start)
        progress(f"crash: {report.crash_runs} runs, kill -9 of the server, restart")
        await _crash_round(server, keys, report)
    except ThinkboxError as exc:
        report.errors.append(f"{exc} (server log: {server.log_tail()[-600:]})")
    finally:
        await asyncio.to_thread(server.stop)
    if report.step_ms_service_p50 is not None and report.step_ms_in_process_p50 is not None:
        report.step_overhead_ms_p50 = report.step_ms_service_p50 - report.step_ms_in_process_p50


def _judge(report: ServiceBench) -> None:
    for name, value in report:
        if isinstance(value, float):
            setattr(report, name, round(value, 3))
    report.load_phases_ms_p50 = {
        k: v if v is None else round(v, 1) for k, v in report.load_phases_ms_p50.items()
    }

    def le(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    report.targets = {
        "no_lost_duplicated_or_stuck": report.succeeded == report.runs
        and not (report.lost_events or report.duplicated_events or report.stuck_runs),
        "total_le_20s": report.stuck_runs == 0 and le(report.total_s, 20.0),
        "step_overhead_p50_le_2ms": le(report.step_overhead_ms_p50, 2.0),
        "crash_resumed_100pct": report.crash_resumed_fraction == 1.0,
        "idle_first_event_le_50ms": le(report.idle_first_event_ms, 50.0),
    }


# -- rendering --------------------------------------------------------------------------------------
def _f(value: float | None, unit: str = " ms", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def render(report: ServiceBench, console: Console) -> None:
    """The figures as a table, the targets, what went wrong and how each figure is measured."""
    table = Table(title="thinkbox service benchmark", title_justify="left", caption_justify="left",
                  caption=f"{report.runs} runs of {report.steps} code steps by {report.users} users of "
                  f"{report.tenants} tenants")  # fmt: skip
    table.add_column("measurement")
    table.add_column("value", justify="right")
    rows = [
        ("runs succeeded / submitted", f"{report.succeeded} / {report.runs}"),
        ("all done in (total)", _f(report.total_s, " s", 2)),
        ("runs per second", _f(report.runs_per_s, "", 1)),
        ("first event p50 / p99", f"{_f(report.first_event_ms_p50)} / {_f(report.first_event_ms_p99)}"),
        ("terminal event p50 / p99", f"{_f(report.terminal_ms_p50)} / {_f(report.terminal_ms_p99)}"),
        ("first event, idle server", _f(report.idle_first_event_ms)),
        (
            "step p50: service / in-process",
            f"{_f(report.step_ms_service_p50, ' ms', 2)} / {_f(report.step_ms_in_process_p50, ' ms', 2)}",
        ),
        ("added latency per step p50", _f(report.step_overhead_ms_p50, " ms", 2)),
        ("step p50 under load", _f(report.step_ms_under_load_p50)),
        (
            "under load p50: slot wait / session start / run",
            " / ".join(_f(v, "", 0) for v in report.load_phases_ms_p50.values()) + " ms",
        ),
        (
            "events lost / duplicated / runs stuck",
            f"{report.lost_events} / {report.duplicated_events} / {report.stuck_runs}",
        ),
        ("events per run; reconnects", f"{_f(report.events_per_run, '', 1)}; {report.reconnects}"),
        (
            "crash: runs / interrupted / resumed",
            f"{report.crash_runs} / {report.crash_interrupted} / {report.crash_resumed}",
        ),
        (
            "crash: interrupted runs finished",
            _f(None if report.crash_resumed_fraction is None else report.crash_resumed_fraction * 100, " %"),
        ),
        (
            "crash: lost / duplicated / stuck",
            f"{report.crash_lost_events} / {report.crash_duplicated_events} / {report.crash_stuck_runs}",
        ),
        ("restart until /healthz answered", _f(report.restart_s, " s", 2)),
        ("server peak RSS (VmHWM)", _f(report.peak_rss_mib, " MiB")),
        ("server + sandboxes PSS, most seen", _f(report.tree_pss_mib_max, " MiB")),
    ]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    targets = Table(title="targets", title_justify="left")
    targets.add_column("target")
    targets.add_column("result", justify="center")
    for key, ok in report.targets.items():
        targets.add_row(TARGETS[key], "[green]pass[/green]" if ok else "[red]MISSED[/red]")
    console.print(targets)
    for error in report.errors:
        console.print(f"[yellow]error: {error}[/yellow]")
    for name, how in report.method.items():
        console.print(f"[dim]{name}: {how}[/dim]")
    m = report.machine
    console.print(f"{report.duration_s:.0f} s on {m.get('cpu')} ({m.get('cores')} cores), settings "
                  f"{report.service_settings}, load average {m.get('loadavg_1m_at_start')} -> "
                  f"{m.get('loadavg_1m_at_end')}")  # fmt: skip
