"""Evaluated system prompts kept on disk, so that a new process does not evaluate them again (cold start).

A fresh process must evaluate the whole system prompt (about 500 tokens) before the model's first token;
on a small CPU that is most of a cold ``thinkbox ask``. llama.cpp can serialise a context's state (its KV
cache, ~28 KiB a token for the 1.5B model); loading the state of the prompt's first part instead takes a
fraction of a second. :class:`PromptStates` keeps one file per evaluated prefix (the system message) under
``<cache dir>/prompt-states/<fingerprint>/``; the fingerprint covers what makes a state valid (the model
file, its size and modification time, the context size, the binding's version), so another model or
version never matches. On a cold start the file sharing the longest token prefix with the prompt is
loaded; the loop's KV-cache reuse (:func:`~thinkbox.models.local_decode.evaluate_prompt`) then drops what
does not match. A file that cannot be read or loaded is deleted and rebuilt; at most :data:`MAX_STATES`
files are kept per fingerprint, the least recently used dropped.

File format: ``MAGIC``, a 4-byte big-endian header length, a JSON header ``{"tokens": [...]}`` and the
bytes of ``llama_state_get_data``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAGIC = b"TBXSTATE1\n"
MAX_STATES = 4
MIN_SHARED = 32
"""A state sharing fewer leading tokens with the prompt is not worth loading."""


def fingerprint(model_path: Path, context_tokens: int, binding_version: str) -> str:
    """What makes a saved state valid for a model instance, hashed."""
    st = model_path.stat()
    key = [str(model_path.resolve()), st.st_size, st.st_mtime_ns, context_tokens, binding_version]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptStates:
    """Saved llama.cpp states of evaluated prompt prefixes, for one model instance (see the module doc)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _files(self) -> list[Path]:
        try:
            return sorted(self.folder.glob("*.state"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return []

    def _header(self, path: Path) -> list[int] | None:
        try:
            with path.open("rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not a prompt state")
                (size,) = struct.unpack(">I", f.read(4))
                tokens = json.loads(f.read(size))["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ValueError("bad header")
            return tokens
        except (OSError, ValueError, KeyError, struct.error) as exc:
            log.warning("dropping unreadable prompt state %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def restore(self, llm: Any, tokens: list[int], need: int = MIN_SHARED) -> int:
        """Load into the (empty) context ``llm`` the saved state sharing most leading tokens with
        ``tokens``, at least ``need`` of them; how many tokens the context then holds (0: nothing
        suitable was saved)."""
        best: tuple[int, Path, list[int]] | None = None
        for path in self._files():
            saved = self._header(path)
            if saved is None:
                continue
            shared = shared_prefix(saved, tokens)
            if shared >= max(need, MIN_SHARED) and (best is None or shared > best[0]):
                best = (shared, path, saved)
        if best is None:
            return 0
        _, path, saved = best
        try:
            data = path.read_bytes()
            start = len(MAGIC) + 4 + struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])[0]
            state = data[start:]
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            import llama_cpp

            if llama_cpp.llama_state_set_data(llm._ctx.ctx, buffer, len(state)) != len(state):
                raise ValueError("llama.cpp did not take the whole state")
        except (OSError, ValueError, struct.error) as exc:
            log.warning("dropping prompt state %s that would not load: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            llm.reset()
            return 0
        llm.input_ids[: len(saved)] = saved
        llm.n_tokens = len(saved)
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return len(saved)

    def save(self, llm: Any) -> Path | None:
        """Save the context's state (its ``n_tokens`` evaluated tokens); None when it cannot be written."""
        import llama_cpp

        tokens = [int(t) for t in llm.input_ids[: llm.n_tokens]]
        name = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:20] + ".state"
        try:
            size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
            buffer = (ctypes.c_uint8 * int(size))()
            written = int(llama_cpp.llama_state_get_data(llm._ctx.ctx, buffer, size))
            header = json.dumps({"tokens": tokens}).encode()
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp", delete=False) as f:
                try:
                    f.write(MAGIC + struct.pack(">I", len(header)) + header)
                    f.write(memoryview(buffer)[:written])
                except OSError:
                    os.unlink(f.name)
                    raise
            target = self.folder / name
            os.replace(f.name, target)
        except OSError as exc:
            log.warning("could not save the prompt state in %s: %s", self.folder, exc)
            return None
        for old in self._files()[MAX_STATES:]:
            with contextlib.suppress(OSError):
                old.unlink()
        return target
