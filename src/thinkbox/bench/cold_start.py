"""Cold against warm: how long ``thinkbox ask`` makes a user wait in a new process and with a loaded model.

For the product question (``thinkbox ask "What is 48271 * 9173?"``), side by side in one run:

- **cold**: ``thinkbox ask --json`` as a new process (its model not loaded, the page cache warm), with the
  evaluated system prompt saved on disk by an earlier process (:mod:`thinkbox.models.prompt_state`): what
  every ``ask`` after the first on a machine waits;
- **cold, nothing saved** (``model.prompt_cache`` off): the first ``ask`` on a machine;
- **cold through a local serve**: ``thinkbox ask --json`` as a new process while a ``thinkbox serve`` runs
  on the same data dir (a child process on a loopback port, asked one other question before, as a running
  service has been): ``ask`` finds it (:mod:`thinkbox.service.local`) and the service's loaded model answers.
  The process is new, the model is not: what a user who keeps ``thinkbox serve`` running waits;
- **warm**: the same question through ``run_agent`` in this process, the model loaded and used before on
  another question (what a running ``thinkbox serve`` answers with: the system prompt is in its KV cache,
  the question is not).

Times run from starting the process (cold) or the run (warm) to the first thought token and to the final
answer, by the events' own clocks (``ts``, the same wall clock in every process). The two local cold runs
pass ``--no-serve``, so that a service the user happens to run does not answer them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from thinkbox.config import Settings
from thinkbox.errors import ThinkboxError
from thinkbox.models.local import LocalModel

PRODUCT_QUESTION = "What is 48271 * 9173?"
WARM_UP_QUESTION = "What is 7 to the power of 13?"
"""Asked first on the loaded model, so that the warm run reuses the system prompt, not the whole prompt."""


class ColdStart(BaseModel):
    question: str = PRODUCT_QUESTION
    cold_first_token_s: float
    cold_answer_s: float
    cold_unsaved_first_token_s: float
    cold_unsaved_answer_s: float
    warm_first_token_s: float
    warm_answer_s: float
    cold_over_warm_first_token: float = Field(description="cold_first_token_s / warm_first_token_s")
    cold_serve_first_token_s: float | None = Field(
        None, description="A new ask process answered by a running local serve (None: it could not start)."
    )
    cold_serve_answer_s: float | None = None
    cold_serve_over_warm_first_token: float | None = Field(
        None, description="cold_serve_first_token_s / warm_first_token_s"
    )
    serve_error: str | None = Field(None, description="Why the local serve could not be measured.")
    answers: dict[str, str] = Field(default_factory=dict)


def _ask_cold(
    settings: Settings, *, saved_prompt: bool, data_dir: Path | None = None, question: str = PRODUCT_QUESTION
) -> tuple[float, float, str]:
    """``thinkbox ask --json`` in a new process; with ``data_dir``, through the serve running on it."""
    env = {**os.environ, "THINKBOX_MODEL__PROMPT_CACHE": "true" if saved_prompt else "false"}
    env["THINKBOX_MODEL__NAME"] = settings.model.name
    command = [str(Path(sys.executable).with_name("thinkbox")), "ask", "--json", question]
    if data_dir is None:
        command.insert(2, "--no-serve")
    else:
        env["THINKBOX_DATA_DIR"] = str(data_dir)
    started = time.time()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    first = next((e["ts"] for e in events if e.get("type") == "thought_delta"), None)
    final = next((e for e in events if e.get("type") == "final_answer"), None)
    if first is None or final is None:
        raise ThinkboxError(f"thinkbox ask did not answer (exit {proc.returncode}): {proc.stderr[-500:]}")
    if data_dir is not None and "asking thinkbox serve" not in proc.stderr:
        raise ThinkboxError(f"thinkbox ask did not use the serve on {data_dir}: {proc.stderr[-500:]}")
    return round(first - started, 2), round(final["ts"] - started, 2), str(final["answer"])


def _ask_through_serve(settings: Settings, say: Any) -> tuple[float, float, str]:
    """A ``thinkbox serve`` child on its own data dir, asked a warm-up question, then the measured one."""
    from thinkbox.bench.service_server import ChildServer, free_port

    root = Path(tempfile.mkdtemp(prefix="thinkbox-bench-cold-"))
    env = {**os.environ, "THINKBOX_MODEL__NAME": settings.model.name, "THINKBOX_DATA_DIR": str(root)}
    server = ChildServer(root, free_port(), env)
    try:
        say("cold start: starting thinkbox serve (it loads the model in the background)")
        server.start()  # serve publishes serve.json before it listens: it is there once /healthz answers
        _ask_cold(settings, saved_prompt=True, data_dir=root, question=WARM_UP_QUESTION)
        say("cold start: thinkbox ask in a new process, answered by the running serve")
        return _ask_cold(settings, saved_prompt=True, data_dir=root)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _ask_warm(
    model: LocalModel, settings: Settings, question: str = PRODUCT_QUESTION
) -> tuple[float, float, str]:
    from thinkbox.agent.events import FinalAnswer, ThoughtDelta
    from thinkbox.agent.loop import run_agent
    from thinkbox.sandbox import registry
    from thinkbox.sandbox.types import SessionConfig

    backend = registry.create_backend(settings.sandbox.backend)
    try:
        session = await backend.create_session(SessionConfig(limits=settings.sandbox.limits))
        started = time.time()
        first: float | None = None
        answer: FinalAnswer | None = None
        async with session:
            async for event in run_agent(question, model=model, session=session, settings=settings):
                if isinstance(event, ThoughtDelta) and first is None:
                    first = event.ts
                elif isinstance(event, FinalAnswer):
                    answer = event
    finally:
        await backend.aclose()
    if first is None or answer is None:
        raise ThinkboxError("the warm run did not answer")
    return round(first - started, 2), round(answer.ts - started, 2), answer.answer


async def measure_cold_start(model: LocalModel, settings: Settings, say: Any) -> ColdStart:
    """Cold runs first (the bench's own model loaded but idle), then the warm run on ``model``."""
    say("cold start: thinkbox ask in a new process, nothing saved")
    unsaved = _ask_cold(settings, saved_prompt=False)
    say("cold start: thinkbox ask in a new process (saving the system prompt's state)")
    _ask_cold(settings, saved_prompt=True)  # makes sure the state is saved, as after any earlier ask
    say("cold start: thinkbox ask in a new process, system prompt saved")
    cold = _ask_cold(settings, saved_prompt=True)
    await _ask_warm(model, settings, WARM_UP_QUESTION)  # its KV cache now holds the system prompt only
    say("warm: the same question with the loaded model")
    warm = await _ask_warm(model, settings)
    served: tuple[float, float, str] | None = None
    serve_error = None
    try:
        served = await asyncio.to_thread(_ask_through_serve, settings, say)
    except (ThinkboxError, OSError, subprocess.TimeoutExpired) as exc:
        serve_error = f"{type(exc).__name__}: {exc}"[:500]
    return ColdStart(
        cold_first_token_s=cold[0],
        cold_answer_s=cold[1],
        cold_unsaved_first_token_s=unsaved[0],
        cold_unsaved_answer_s=unsaved[1],
        warm_first_token_s=warm[0],
        warm_answer_s=warm[1],
        cold_over_warm_first_token=round(cold[0] / warm[0], 2) if warm[0] else 0.0,
        cold_serve_first_token_s=served[0] if served else None,
        cold_serve_answer_s=served[1] if served else None,
        cold_serve_over_warm_first_token=round(served[0] / warm[0], 2) if served and warm[0] else None,
        serve_error=serve_error,
        answers={"cold": cold[2], "cold_unsaved": unsaved[2], "warm": warm[2]}
        | ({"cold_serve": served[2]} if served else {}),
    )
