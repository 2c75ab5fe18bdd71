"""A new process takes the evaluated system prompt from disk (:mod:`thinkbox.models.prompt_state`), with the
real embedded model (marked ``model``): same replies, fewer tokens evaluated, bad files rebuilt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from thinkbox.config import load_settings
from thinkbox.errors import ConfigError
from thinkbox.models import install
from thinkbox.models.base import Message, ModelRequest, complete

pytestmark = pytest.mark.model
SYSTEM = (
    "You are a careful assistant that answers in JSON with the keys thought, code and final_answer. "
    "Keep the thought short, leave code empty when no code is needed, and put only the answer itself in "
    "final_answer, without units unless they were asked for."
)


def chat(question: str, system: str = SYSTEM) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def fresh_model(cache: Path, context_tokens: int = 2048) -> object:
    """A new LocalModel, as a new process would make it: nothing evaluated yet."""
    from thinkbox.models.local import LocalModel

    for name in ("qwen2.5-coder-0.5b", install.DEFAULT_MODEL):
        settings = load_settings(model={"name": name, "context_tokens": context_tokens})
        try:
            path = install.locate_model(settings)
        except ConfigError:
            continue
        return LocalModel(path, context_tokens=context_tokens, prompt_states=cache, max_tokens=24)
    pytest.skip("no local model is installed here (scripts/setup.sh)")


def ask(model: object, question: str, system: str = SYSTEM) -> tuple[str, int]:
    """The model's reply and how many prompt tokens it took from a saved state; then the model is closed."""
    from thinkbox.models.local import LocalModel

    assert isinstance(model, LocalModel)
    request = ModelRequest(messages=chat(question, system), max_tokens=24, temperature=0.0)
    try:
        reply = asyncio.run(complete(model, request))
    finally:
        model.close()
    return reply.text, model.restored_tokens


def test_a_new_model_takes_the_saved_system_prompt_and_answers_the_same(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the llama.cpp runtime is not installed (scripts/setup.sh)")
    first, restored_first = ask(fresh_model(tmp_path), "What is 2 + 3?")
    files = list(tmp_path.glob("*/*.state"))
    assert restored_first == 0 and len(files) == 1
    second, restored_second = ask(fresh_model(tmp_path), "What is 2 + 3?")
    assert restored_second > 32  # the system message came from the file...
    assert second == first  # ...and greedy decoding gives the same reply
    _, restored_other = ask(fresh_model(tmp_path), "Name a prime number.")
    assert restored_other == restored_second  # another question, the same system prompt


def test_a_damaged_state_is_dropped_and_rebuilt_and_another_context_size_does_not_match(
    tmp_path: Path,
) -> None:
    pytest.importorskip("llama_cpp", reason="the llama.cpp runtime is not installed (scripts/setup.sh)")
    ask(fresh_model(tmp_path), "What is 2 + 3?")
    [saved] = list(tmp_path.glob("*/*.state"))
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])  # cut short: the header reads, the state does not load
    text, restored = ask(fresh_model(tmp_path), "What is 2 + 3?")
    assert restored == 0 and text
    assert saved.exists() and saved.stat().st_size == len(data)  # rebuilt whole
    _, restored_bigger = ask(fresh_model(tmp_path, context_tokens=4096), "What is 2 + 3?")
    assert restored_bigger == 0  # another fingerprint: its own folder
    assert len(list(tmp_path.iterdir())) == 2


def test_a_changed_system_prompt_gets_its_own_state_instead_of_a_stale_one(tmp_path: Path) -> None:
    """A state saved for an earlier wording shares all but the prompt's last words: it is not loaded (most
    of the prompt would be evaluated anyway, and the new prompt's state would never be saved)."""
    pytest.importorskip("llama_cpp", reason="the llama.cpp runtime is not installed (scripts/setup.sh)")
    ask(fresh_model(tmp_path), "What is 2 + 3?")
    changed = SYSTEM.replace("without units unless they were asked for", "with units")
    _, restored = ask(fresh_model(tmp_path), "What is 2 + 3?", changed)
    assert restored == 0 and len(list(tmp_path.glob("*/*.state"))) == 2  # evaluated, and saved
    _, restored_again = ask(fresh_model(tmp_path), "What is 2 + 3?", changed)
    assert restored_again > 32  # the new wording's state is used from now on
