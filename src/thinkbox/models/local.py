"""The embedded local model: a GGUF file run on the CPU by llama.cpp (``llama-cpp-python``).

One :class:`LocalModel` owns one ``Llama`` instance and one worker thread. Requests are queued behind an
``asyncio.Lock``, so concurrent agent runs share the model instead of loading a second copy (two model
processes on 2 cores slow each other badly). Generation runs in the worker thread; each token is handed
back to the event loop with ``call_soon_threadsafe``, so the loop never blocks.

Prompts are rendered with the model's own chat template (read from the GGUF) and tokenized here, which
lets the backend report how much of the prompt was already in the KV cache: llama.cpp keeps the tokens of
the last request and only evaluates what follows their longest common prefix. Across the turns of one run
the chat only grows, so each turn evaluates just the new messages; a new run reuses the shared
system-prompt prefix left by the previous one.

``ModelRequest.json_schema`` is enforced with a GBNF grammar compiled from the schema (cached per schema,
strings made strictly JSON-valid; a fenced code block after the object where the schema asks for one, see
:mod:`thinkbox.models.fenced`); the token loop in :mod:`thinkbox.models.local_decode` checks it on the
most likely candidates first. ``max_tokens`` bounds every reply so a looping model cannot run forever.
Generation threads follow the machine: every core while no other work wants the CPU, one fewer when
something else runs (see :func:`generation_threads`); model.threads fixes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkbox.config import Settings
from thinkbox.errors import (
    ConfigError,
    ContextOverflow,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    ThinkboxError,
)
from thinkbox.models import fenced
from thinkbox.models.base import Message, ModelEvent, ModelReply, ModelRequest, TextDelta, Usage
from thinkbox.models.install import locate_model
from thinkbox.models.prompt_state import MIN_SHARED, PromptStates, fingerprint, shared_prefix
from thinkbox.models.scaffold import Scaffold

RUNTIME_HINT = "install the runtime with scripts/install_llama.sh (or `pip install 'thinkbox[local]'`)"


@dataclass
class _Done:
    reply: ModelReply


@dataclass
class _Failed:
    error: BaseException


_Item = TextDelta | _Done | _Failed


class LocalModel:
    """A :class:`~thinkbox.models.base.ModelBackend` over one in-process llama.cpp model."""

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 8192,
        threads: int | None = None,
        timeout_s: float = 120.0,
        max_tokens: int = 1024,
        name: str | None = None,
        prompt_states: Path | None = None,
    ) -> None:
        self.name = f"local:{name or model_path.stem}"
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.fixed_threads = threads
        self.threads = threads or default_threads()
        """Generation threads of the latest request (chosen per request unless ``threads`` is given)."""
        self.batch_threads = threads or os.cpu_count() or 1
        """Prompt evaluation is one large batch per request and uses every core well (16.7 vs 11.3 tokens/s
        with 2 vs 1 threads, measured under load); token-by-token generation uses ``threads``."""
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self._llm: Any = None
        self._formatter: Any = None
        self._grammars: dict[str, str] = {}
        self._pending_text = ""
        self._last: tuple[str, list[int]] | None = None
        """Text and tokens of the last evaluated sequence (prompt + reply): the reply keeps its own tokens."""
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thinkbox-llama")
        self.load_s: float | None = None
        self._state_root = prompt_states
        self.prompt_states: PromptStates | None = None
        """Evaluated system prompts on disk (None: off); used by the first request after loading."""
        self._cold = True
        self.restored_tokens = 0
        """Prompt tokens the first request took from a saved state instead of evaluating them."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalModel:
        """Build from ``settings.model``; raises ConfigError when the model file or runtime is missing."""
        path = locate_model(settings)
        _import_llama()
        m = settings.model
        return cls(
            path,
            context_tokens=m.context_tokens,
            threads=m.threads,
            timeout_s=m.timeout_s,
            max_tokens=m.max_tokens,
            name=m.name if m.path is None else path.stem,
            prompt_states=settings.cache_dir / "prompt-states" if m.prompt_cache else None,
        )

    # ------------------------------------------------------------------ loading

    async def load(self) -> None:
        """Load the weights now (otherwise the first request does it)."""
        async with self._queue_lock():
            await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_loaded)

    def _queue_lock(self) -> asyncio.Lock:
        """The lock that queues requests; a new one if the model is reused from another event loop."""
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _ensure_loaded(self) -> Any:
        if self._llm is not None:
            return self._llm
        llama_cpp = _import_llama()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        started = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.context_tokens,
                n_threads=self.threads,
                n_threads_batch=self.batch_threads,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            raise ModelUnavailable(
                f"llama.cpp could not load {self.model_path} ({exc}): check the file with "
                "`thinkbox model status`, reinstall it with `thinkbox model install`",
                retryable=False,
            ) from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(
                f"{self.model_path} has no chat template in its metadata: use an instruction-tuned GGUF "
                "(setting model.path)"
            )
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llm, llm.token_eos()),
            bos_token=_token_text(llm, llm.token_bos()),
        )
        if self._state_root is not None:
            version = getattr(llama_cpp, "__version__", "?")
            key = fingerprint(self.model_path, self.context_tokens, version)
            self.prompt_states = PromptStates(self._state_root / key)
        self._llm = llm
        self.load_s = time.perf_counter() - started
        return llm

    async def aclose(self) -> None:
        """Free the model once the request in progress (if any) has finished."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Free the model and its thread. The object is unusable afterwards."""
        llm, self._llm = self._llm, None
        self._executor.shutdown(wait=True)
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()

    # ------------------------------------------------------------------ serving

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: _Item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self._queue_lock():
            job = loop.run_in_executor(self._executor, self._generate, request, emit, cancel)
            deadline = loop.time() + self.timeout_s
            try:
                while True:
                    remaining = deadline - loop.time()
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=max(remaining, 0.0))
                    except TimeoutError:
                        raise ModelTimeout(
                            f"the local model gave no complete reply within {self.timeout_s:.0f} s "
                            "(setting model.timeout_s; or lower model.max_tokens)"
                        ) from None
                    if isinstance(item, TextDelta):
                        yield item
                    elif isinstance(item, _Done):
                        yield item.reply
                        return
                    else:
                        raise item.error
            finally:
                cancel.set()  # stops generation at the next token if the consumer left early
                with contextlib.suppress(Exception):
                    await asyncio.shield(job)

    def _generate(
        self, request: ModelRequest, emit: Callable[[_Item], None], cancel: threading.Event
    ) -> None:
        """Worker thread: evaluate the prompt, sample, emit deltas, then one reply (or the failure)."""
        try:
            emit(_Done(self._generate_blocking(request, emit, cancel)))
        except ThinkboxError as exc:
            emit(_Failed(exc))
        except Exception as exc:  # never leave the consumer waiting: every failure becomes a ModelError
            emit(_Failed(ModelError(f"the local model failed: {type(exc).__name__}: {exc}")))

    def _generate_blocking(
        self, request: ModelRequest, emit: Callable[[_Item], None], cancel: threading.Event
    ) -> ModelReply:
        llm = self._ensure_loaded()
        tokens = self.tokenize_chat(request.messages)
        if len(tokens) >= self.context_tokens - 16:
            raise ContextOverflow(
                f"the prompt has {len(tokens)} tokens, more than the local model's context of "
                f"{self.context_tokens} allows: raise model.context_tokens or shorten the history"
            )
        grammar = self._grammar(request.json_schema) if request.json_schema is not None else None
        scaffold = _scaffold(request.json_schema) if request.json_schema is not None else None
        max_tokens = max(1, min(request.max_tokens, self.max_tokens, self.context_tokens - len(tokens)))
        threads = self.fixed_threads or generation_threads()
        if threads != self.threads:
            llm._ctx.set_n_threads(threads, self.batch_threads)
            self.threads = threads
        if self._cold:
            self._cold = False
            self._warm_start(llm, request.messages, tokens)
        from thinkbox.models.local_decode import decode

        result = decode(
            llm,
            tokens,
            max_tokens=max_tokens,
            temperature=request.temperature,
            seed=request.seed,
            grammar=grammar,
            stop=request.stop,
            cancel=cancel,
            emit=lambda text: emit(TextDelta(text)),
            scaffold=scaffold,
        )
        self._remember(tokens, llm)
        return ModelReply(
            text=result.text,
            usage=Usage(
                prompt_tokens=len(tokens),
                completion_tokens=result.completion_tokens,
                cached_tokens=result.cached_tokens,
            ),
            finish_reason=result.finish_reason,
            constrained=grammar is not None,
        )

    # ------------------------------------------------------------------ helpers

    def tokenize_chat(self, messages: list[Message]) -> list[int]:
        """The chat rendered with the model's own template (generation prompt added), as tokens.

        When the chat continues the last request (its prompt and the reply the model generated), the
        tokens the model actually produced are kept instead of re-tokenizing the reply's text: a reply
        sampled under a grammar is often tokenized differently from its canonical form, which would
        break the KV-cache prefix right after the previous prompt.
        """
        llm = self._ensure_loaded()
        text: str = self._formatter(messages=list(messages)).prompt
        if self._last is not None and text.startswith(self._last[0]):
            prefix_text, prefix_tokens = self._last
            rest: list[int] = llm.tokenize(
                text[len(prefix_text) :].encode("utf-8"), add_bos=False, special=True
            )
            self._pending_text = text
            return [*prefix_tokens, *rest]
        self._pending_text = text
        tokens: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def _warm_start(self, llm: Any, messages: list[Message], tokens: list[int]) -> None:
        """First request of the process: load the saved state of the system prompt, or evaluate the
        system message alone and save its state for the next process (see :mod:`.prompt_state`)."""
        states = self.prompt_states
        if states is None or llm.n_tokens != 0:
            return
        shared = 0
        if messages and messages[0]["role"] == "system":
            text = self._formatter(messages=[messages[0]]).prompt
            system = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            shared = shared_prefix(system, tokens)
        # a state of another system prompt (the prompt changed since it was saved) would leave most of
        # this one to evaluate, and would never be replaced: only a state covering the system part counts
        self.restored_tokens = states.restore(llm, tokens, need=max(shared, MIN_SHARED))
        if self.restored_tokens or not MIN_SHARED <= shared < len(tokens):
            return
        llm.eval(tokens[:shared])
        states.save(llm)

    def _remember(self, prompt_tokens: list[int], llm: Any) -> None:
        """Record the evaluated sequence (prompt + generated tokens) and its text for the next request."""
        evaluated: list[int] = llm.input_ids[: llm.n_tokens].tolist()
        if evaluated[: len(prompt_tokens)] != prompt_tokens:
            self._last = None
            return
        generated = evaluated[len(prompt_tokens) :]
        try:
            reply_text = bytes(llm.detokenize(generated, prev_tokens=prompt_tokens)).decode("utf-8")
        except UnicodeDecodeError:
            self._last = None
            return
        self._last = (self._pending_text + reply_text, evaluated)

    def _grammar(self, schema: dict[str, Any]) -> str:
        """The GBNF grammar for ``schema`` (strict JSON strings), cached per schema; a schema with fences
        (:mod:`thinkbox.models.fenced`) adds the code block after the object."""
        key = json.dumps(schema)  # property order matters: the grammar emits them in this order
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                grammar = strict_strings(json_schema_to_gbnf(json.dumps(fenced.plain_schema(schema))))
                if fenced.is_fenced(schema):
                    grammar = fenced.fenced_gbnf(grammar, schema)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise ModelError(f"the local model cannot enforce this JSON schema: {exc}") from exc
            if len(self._grammars) >= 16:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def reset_cache(self) -> None:
        """Forget the evaluated tokens (the next request evaluates its whole prompt). For benchmarks."""
        self._last = None
        if self._llm is not None:
            self._llm.reset()


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def strict_strings(gbnf: str) -> str:
    """The grammar with JSON strings that cannot hold raw control characters.

    llama-cpp-python's schema converter lets a string contain a raw newline, which ``json.loads`` rejects;
    models write code into strings, so they do it often. Here they must write ``\\n``, as JSON requires.
    """
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


def default_threads() -> int:
    """Generation threads when the CPU is shared: one fewer than the cores (at least one).

    llama.cpp's threads wait for each other at every layer; when another process takes a core, a thread
    that loses it stalls the others. Measured on 2 cores while other work ran: 1 thread generated
    17-23 tokens/s with the 0.5B model, 2 threads 1.4-5.4 tokens/s. Set model.threads to override.
    """
    return max(1, (os.cpu_count() or 1) - 1)


CPU_BUSY_PSI = 5.0
"""Share of the last 10 s (percent) in which some task waited for a CPU, above which the CPU is shared."""


def generation_threads() -> int:
    """Every core while no other work wants the CPU, else :func:`default_threads`.

    On an idle 2-core machine 2 threads answered 48271 * 9173 in 5.8 s against 8.9 s with 1. The CPU
    counts as free when the kernel's pressure stall information (``/proc/pressure/cpu``) says tasks
    waited for a CPU less than 5 % of the last 10 s, and no other task is runnable at this moment; where
    the kernel has no PSI, the cautious choice stays.
    """
    cores = os.cpu_count() or 1
    if cores > 1 and cpu_is_free():
        return cores
    return default_threads()


def cpu_is_free() -> bool:
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        waited = float(some[1].partition("=")[2])
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return waited < CPU_BUSY_PSI and running <= 1  # the one running is this thread


def _scaffold(schema: dict[str, Any]) -> Scaffold | fenced.FencedScaffold | None:
    if fenced.is_fenced(schema):
        return fenced.FencedScaffold.from_schema(schema)
    return Scaffold.from_schema(schema)


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="ignore")


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            f"the local model runtime llama-cpp-python is not installed: {RUNTIME_HINT}"
        ) from exc
    except OSError as exc:  # the shared library failed to load
        raise ConfigError(f"the llama.cpp library failed to load ({exc}): {RUNTIME_HINT}") from exc
    return llama_cpp
