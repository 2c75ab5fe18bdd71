"""The token loop of the local model: KV-prefix reuse, grammar-checked sampling, streaming, stop conditions.

Why not ``Llama.create_completion``: its sampler chain runs the JSON grammar over the whole vocabulary
(151k tokens for Qwen) at every step, which halved generation speed here. Like llama.cpp's own server, this
loop first picks among the ``TOP_K`` most likely tokens, asks the grammar which of those it allows, and
only when it allows none of them checks the whole vocabulary. The result is the same constrained output.
"""

from __future__ import annotations

import codecs
import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np

from thinkbox.models.fenced import FencedScaffold
from thinkbox.models.scaffold import Scaffold

TOP_K = 48
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass
class Decoded:
    text: str
    completion_tokens: int
    cached_tokens: int
    finish_reason: str


class GrammarChecker:
    """A llama.cpp grammar sampler, used only to mask candidates and to advance on the chosen token."""

    def __init__(self, llm: Any, gbnf: str) -> None:
        self._smpl = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if not self._smpl:
            raise ValueError("llama.cpp rejected the grammar compiled from the JSON schema")

    def mask(self, ids: np.ndarray[Any, Any], logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The logits of ``ids`` with the tokens the grammar forbids set to -inf."""
        data = np.zeros(len(ids), dtype=_TOKEN_DATA)
        data["id"] = ids
        data["logit"] = logits
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(llama_cpp.llama_token_data_p), size=len(ids), selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(self._smpl, ctypes.byref(array))
        return data["logit"].copy()

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._smpl, token)

    def close(self) -> None:
        if self._smpl:
            llama_cpp.llama_sampler_free(self._smpl)
            self._smpl = None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def evaluate_prompt(llm: Any, tokens: list[int]) -> int:
    """Bring the KV cache to ``tokens``, evaluating only what follows the part already there.

    Returns how many tokens were reused. At least the last token is evaluated, for fresh logits.
    """
    reuse = min(common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens), len(tokens) - 1)
    if reuse > 0 and not llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
        reuse = 0
    llm.n_tokens = max(reuse, 0)
    llm.eval(tokens[llm.n_tokens :])  # eval() drops the cache past n_tokens first
    return max(reuse, 0)


def decode(
    llm: Any,
    tokens: list[int],
    *,
    max_tokens: int,
    temperature: float,
    grammar: str | None,
    stop: Sequence[str],
    cancel: threading.Event,
    emit: Callable[[str], None],
    seed: int | None = None,
    scaffold: Scaffold | FencedScaffold | None = None,
) -> Decoded:
    """Generate after ``tokens``; ``emit`` each piece of text as soon as it is certain.

    With a ``scaffold`` (and its grammar), text no token choice can change is appended in one batch
    instead of being sampled token by token, and generation ends as soon as the reply is complete.
    """
    n_vocab = llm.n_vocab()
    checker = GrammarChecker(llm, grammar) if grammar is not None else None
    rng = np.random.default_rng(seed)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    hold = max((len(s) for s in stop), default=1) - 1
    text, sent, produced, finish, cut_by_stop = "", 0, 0, "length", False
    jump = scaffold if checker is not None else None
    head: list[int] = []
    if jump is not None:  # the opening of the reply goes in with the prompt
        head, _ = _force(llm, checker, jump.forced("")[0])
        text = utf8.decode(bytes(llm.detokenize(head)))
        produced = len(head)
    cached = evaluate_prompt(llm, tokens + head)
    try:
        while produced < max_tokens:
            if cancel.is_set():
                finish = "cancelled"
                break
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            token = _choose(logits, checker, temperature, rng)
            produced += 1
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                text += jump.closing(text) if jump is not None else ""  # e.g. a fenced block's end
                break
            if checker is not None:
                checker.accept(token)
            text += utf8.decode(bytes(llm.detokenize([token])))
            batch, complete = [token], False
            if jump is not None:
                forced, complete = jump.forced(text)
                if forced:
                    more, complete = _force(llm, checker, forced, complete)
                    text += utf8.decode(bytes(llm.detokenize(more)))
                    produced += len(more)
                    batch += more
            cut = min((i for s in stop if (i := text.find(s, max(sent - len(s), 0))) >= 0), default=-1)
            if cut >= 0:
                text, finish, cut_by_stop = text[:cut], "stop", True
                break
            if len(text) - hold > sent:
                emit(text[sent : len(text) - hold])
                sent = len(text) - hold
            llm.eval(batch)
            if complete:
                finish = "stop"
                break
    finally:
        if checker is not None:
            checker.close()
    if not cut_by_stop:
        text += utf8.decode(b"", final=True)
    if len(text) > sent:
        emit(text[sent:])
    return Decoded(text=text, completion_tokens=produced, cached_tokens=cached, finish_reason=finish)


def _force(llm: Any, checker: Any, text: str, complete: bool = False) -> tuple[list[int], bool]:
    """Tokens of ``text`` that the grammar accepts, in order (all of them, normally), accepted into it;
    and whether the reply is complete after them."""
    accepted: list[int] = []
    for token in llm.tokenize(text.encode("utf-8"), add_bos=False, special=False):
        allowed = checker.mask(np.array([token], dtype=np.int32), np.zeros(1, dtype=np.float32))
        if not np.isfinite(allowed[0]):
            return accepted, False
        checker.accept(token)
        accepted.append(token)
    return accepted, complete


def _choose(
    logits: np.ndarray[Any, Any], checker: GrammarChecker | None, temperature: float, rng: np.random.Generator
) -> int:
    top = np.argpartition(logits, -TOP_K)[-TOP_K:]
    top = top[np.argsort(logits[top])[::-1]]
    scores = logits[top].astype(np.float32)
    if checker is not None:
        scores = checker.mask(top, scores)
        if not np.isfinite(scores).any():  # none of the likely tokens fits: ask about all of them
            top = np.arange(len(logits), dtype=np.int32)
            scores = checker.mask(top, logits.astype(np.float32))
            if not np.isfinite(scores).any():
                raise ValueError("the grammar allows no token here")
    if temperature <= 0:
        return int(top[int(np.argmax(scores))])
    allowed = np.isfinite(scores)
    weights = np.zeros_like(scores, dtype=np.float64)
    z = scores[allowed].astype(np.float64) / temperature
    weights[allowed] = np.exp(z - z.max())
    return int(rng.choice(top, p=weights / weights.sum()))
