"""``thinkbox bench model``: speed, memory and answer quality of the embedded local model.

Measured in one process, one model instance (as the agent uses it):

- ``prompt_tok_s``: prompt evaluation from an empty KV cache (a ~700-token agent prompt);
- ``gen_tok_s``: generation speed, first token to last, unconstrained;
- ``rss_mib``: resident memory of this process with the model loaded and used;
- ``turn3_s_cached`` / ``turn3_s_uncached``: the third turn of an agent-shaped chat (system prompt,
  question, two actions and their outputs), once right after turns 1-2 (KV cache reused), once from an
  emptied cache: the same request, so the difference is the cache;
- ``questions``: the four reference questions through the real agent loop and sandbox, ``runs`` times
  each, scored by a numeric match in the final answer: ``correct`` runs, ``median_s`` of the correct ones.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from thinkbox.config import Settings
from thinkbox.models.base import Message, ModelReply, ModelRequest, TextDelta
from thinkbox.models.local import LocalModel

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    expected: float
    tolerance: float = 0.0


QUESTIONS = (
    Question(
        "compound_interest",
        "I invest 15000 at 6% annual interest compounded semi-annually for 6 years. How much interest do I "
        "earn in total?",
        6386.41,
        0.01,
    ),
    Question("strawberry", 'How many times does the letter "r" appear in the word "strawberry"?', 3),
    Question("multiply", "What is 48271 * 9173?", 442789883),
    Question(
        "shortest_path",
        "In an undirected weighted graph with edges A-B 4, A-C 2, C-B 1, B-D 5, C-D 8, D-E 3, what is the "
        "length of the shortest path from A to E?",
        11,
    ),
)


class QuestionScore(BaseModel):
    question: str
    expected: float
    correct: int = 0
    runs: int = 0
    median_s: float | None = Field(None, description="Median wall time of the correct runs.")
    answers: list[str] = Field(default_factory=list)
    times_s: list[float] = Field(default_factory=list)


class ModelBenchReport(BaseModel):
    model: str
    path: str
    threads: int
    batch_threads: int
    context_tokens: int
    temperature: float
    load_s: float
    prompt_tokens: int
    prompt_tok_s: float
    gen_tokens: int
    gen_tok_s: float
    rss_mib: float
    turn3_prompt_tokens: int
    turn3_cached_tokens: int
    turn3_s_cached: float
    turn3_s_uncached: float
    turn3_speedup: float
    load_avg: tuple[float, float] = Field(
        (0.0, 0.0),
        description="1-minute load average at the start and the end: other work skews the figures.",
    )
    questions: dict[str, QuestionScore] = Field(default_factory=dict)
    cold_first_token_s: float | None = Field(None, description="See thinkbox.bench.cold_start.")
    cold_answer_s: float | None = None
    cold_unsaved_first_token_s: float | None = None
    cold_unsaved_answer_s: float | None = None
    warm_first_token_s: float | None = None
    warm_answer_s: float | None = None
    cold_over_warm_first_token: float | None = None
    cold_serve_first_token_s: float | None = None
    cold_serve_answer_s: float | None = None
    cold_serve_over_warm_first_token: float | None = None
    serve_error: str | None = None


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text`` (thousands separators allowed)."""
    found = []
    for match in re.finditer(r"-?\d[\d,]*(?:\.\d+)?", text):
        raw = match.group().replace(",", "")
        try:
            found.append(float(raw))
        except ValueError:
            continue
    return found


def is_correct(answer: str, question: Question) -> bool:
    return any(abs(n - question.expected) <= question.tolerance + 1e-9 for n in numbers_in(answer))


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _timed(model: LocalModel, request: ModelRequest) -> tuple[ModelReply, float, float]:
    """The reply, seconds to the first delta, seconds in total."""
    started = time.perf_counter()
    first: float | None = None
    reply: ModelReply | None = None
    async for event in model.stream(request):
        if isinstance(event, TextDelta):
            if first is None:
                first = time.perf_counter() - started
        else:
            reply = event
    total = time.perf_counter() - started
    assert reply is not None
    return reply, first if first is not None else total, total


def _agent_chat() -> tuple[list[Message], list[str]]:
    """The system prompt and question of a real agent run, and the two observations fed back."""
    from thinkbox.agent import prompts

    messages: list[Message] = [
        {"role": "system", "content": prompts.system_prompt([])},
        {"role": "user", "content": QUESTIONS[0].text},
    ]
    observations = [
        "Output:\n21386.41\n",
        "Output:\n6386.41\n",
    ]
    return messages, observations


def _as_history(reply: str) -> str:
    """The reply as the agent loop keeps it in the history (its canonical action JSON)."""
    from thinkbox.agent.parse import InvalidAction, parse_action

    try:
        return parse_action(reply).action.to_message()
    except InvalidAction:
        return reply


async def measure_speed(model: LocalModel, *, temperature: float, say: Progress) -> dict[str, Any]:
    from thinkbox.agent.actions import action_json_schema

    schema = action_json_schema()
    messages, observations = _agent_chat()

    say("prompt and generation speed")
    model.reset_cache()
    speed_chat: list[Message] = [
        messages[0],
        {
            "role": "user",
            "content": "Write a Python function that parses an ISO date, with a docstring and tests.",
        },
    ]
    reply, first, total = await _timed(model, ModelRequest(messages=speed_chat, max_tokens=128))
    evaluated = reply.usage.prompt_tokens - reply.usage.cached_tokens
    prompt_tok_s = evaluated / first
    gen_tok_s = (reply.usage.completion_tokens - 1) / max(total - first, 1e-6)

    say("turns 1-3 of an agent chat, KV cache reused")
    model.reset_cache()
    chat = list(messages)
    for turn in range(2):
        r, _, _ = await _timed(
            model, ModelRequest(chat, json_schema=schema, max_tokens=256, temperature=temperature)
        )
        chat += [
            {"role": "assistant", "content": _as_history(r.text)},
            {"role": "user", "content": observations[turn]},
        ]
    turn3 = ModelRequest(chat, json_schema=schema, max_tokens=256, temperature=0.0)
    cached_reply, _, cached_s = await _timed(model, turn3)
    say("turn 3 again from an empty KV cache")
    model.reset_cache()
    uncached_reply, _, uncached_s = await _timed(model, turn3)
    return {
        "prompt_tokens": evaluated,
        "prompt_tok_s": round(prompt_tok_s, 1),
        "gen_tokens": reply.usage.completion_tokens,
        "gen_tok_s": round(gen_tok_s, 1),
        "turn3_prompt_tokens": cached_reply.usage.prompt_tokens,
        "turn3_cached_tokens": cached_reply.usage.cached_tokens,
        "turn3_s_cached": round(cached_s, 2),
        "turn3_s_uncached": round(uncached_s, 2),
        "turn3_speedup": round(uncached_s / cached_s, 2) if cached_s else 0.0,
        "turn3_same_reply": cached_reply.text == uncached_reply.text,
    }


async def ask_questions(
    model: LocalModel, settings: Settings, *, runs: int, say: Progress
) -> dict[str, QuestionScore]:
    from thinkbox.agent.events import FinalAnswer
    from thinkbox.agent.loop import run_agent
    from thinkbox.sandbox import registry
    from thinkbox.sandbox.types import SessionConfig

    scores = {q.key: QuestionScore(question=q.text, expected=q.expected, median_s=None) for q in QUESTIONS}
    backend = registry.create_backend(settings.sandbox.backend)
    try:
        for question in QUESTIONS:
            score = scores[question.key]
            for run in range(1, runs + 1):
                session = await backend.create_session(SessionConfig(limits=settings.sandbox.limits))
                answer = ""
                started = time.perf_counter()
                try:
                    async for event in run_agent(
                        question.text, model=model, session=session, settings=settings
                    ):
                        if isinstance(event, FinalAnswer):
                            answer = event.answer
                finally:
                    await session.close()
                elapsed = round(time.perf_counter() - started, 2)
                ok = is_correct(answer, question)
                score.runs += 1
                score.correct += ok
                score.answers.append(answer)
                score.times_s.append(elapsed)
                say(
                    f"{question.key} run {run}/{runs}: {'correct' if ok else 'WRONG'} "
                    f"in {elapsed:.1f} s: {answer!r}"
                )
            good = [t for t, a in zip(score.times_s, score.answers, strict=True) if is_correct(a, question)]
            score.median_s = round(statistics.median(good), 2) if good else None
    finally:
        await backend.aclose()
    return scores


async def run_model_bench(
    settings: Settings,
    *,
    runs: int = 4,
    questions: bool = True,
    cold: bool = True,
    temperature: float | None = None,
    progress: Progress | None = None,
) -> ModelBenchReport:
    say = progress or (lambda _msg: None)
    temp = settings.model.temperature if temperature is None else temperature
    # a measurement, not a user waiting: on a loaded machine a reply may take minutes
    update = {"temperature": temp, "timeout_s": max(settings.model.timeout_s, 900.0)}
    settings = settings.model_copy(update={"model": settings.model.model_copy(update=update)})
    load_before = os.getloadavg()[0]
    model = LocalModel.from_settings(settings)
    try:
        say(f"loading {model.model_path}")
        await model.load()
        speed = await measure_speed(model, temperature=temp, say=say)
        starts: dict[str, Any] = {}
        if cold:
            from thinkbox.bench.cold_start import measure_cold_start

            starts = (await measure_cold_start(model, settings, say)).model_dump()
        scores = await ask_questions(model, settings, runs=runs, say=say) if questions and runs > 0 else {}
        return ModelBenchReport(
            model=model.name,
            path=str(model.model_path),
            threads=model.threads,
            batch_threads=model.batch_threads,
            context_tokens=model.context_tokens,
            temperature=temp,
            load_s=round(model.load_s or 0.0, 2),
            rss_mib=round(rss_mib(), 1),
            load_avg=(round(load_before, 2), round(os.getloadavg()[0], 2)),
            questions=scores,
            **{k: v for k, v in {**speed, **starts}.items() if k in ModelBenchReport.model_fields},
        )
    finally:
        await model.aclose()


def render(report: ModelBenchReport, print_line: Callable[[str], None] = print) -> None:
    r = report
    print_line(
        f"model        {r.model}  ({r.threads} threads, {r.batch_threads} for prompts, "
        f"context {r.context_tokens}, loaded in {r.load_s} s)"
    )
    print_line(f"prompt       {r.prompt_tok_s} tok/s  ({r.prompt_tokens} tokens from an empty cache)")
    print_line(f"generation   {r.gen_tok_s} tok/s  ({r.gen_tokens} tokens)")
    print_line(f"memory       {r.rss_mib:.0f} MiB RSS   (load average {r.load_avg[0]} -> {r.load_avg[1]})")
    print_line(
        f"turn 3       {r.turn3_s_cached} s with KV-cache reuse ({r.turn3_cached_tokens}/"
        f"{r.turn3_prompt_tokens} prompt tokens cached), {r.turn3_s_uncached} s without: x{r.turn3_speedup}"
    )
    if r.cold_first_token_s is not None:
        print_line(
            f"cold start   first token {r.cold_first_token_s} s, answer {r.cold_answer_s} s (new process, "
            f"system prompt saved); nothing saved: {r.cold_unsaved_first_token_s} s / "
            f"{r.cold_unsaved_answer_s} s"
        )
        print_line(
            f"warm         first token {r.warm_first_token_s} s, answer {r.warm_answer_s} s (model loaded); "
            f"cold / warm first token: x{r.cold_over_warm_first_token}"
        )
        if r.cold_serve_first_token_s is not None:
            print_line(
                f"cold, serve  first token {r.cold_serve_first_token_s} s, answer {r.cold_serve_answer_s} s "
                f"(new process, answered by a running thinkbox serve): x{r.cold_serve_over_warm_first_token}"
            )
        elif r.serve_error:
            print_line(f"cold, serve  not measured: {r.serve_error}")
    for key, q in r.questions.items():
        median = f"median {q.median_s} s" if q.median_s is not None else "never correct"
        print_line(f"{key:<18} {q.correct}/{q.runs} correct, {median}")
