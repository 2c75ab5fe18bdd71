"""A JSON object then a fenced code block: the local model's grammar, the scaffold, and endpoints.

The grammar is checked with llama.cpp itself on the model's vocabulary (loaded without its weights, in
well under a second): every token of a reply must be allowed, then the end of the reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from chat_server import ChatServer

from thinkbox.agent.reply_format import action_schema
from thinkbox.config import load_settings
from thinkbox.errors import ConfigError
from thinkbox.models.base import ModelRequest, complete
from thinkbox.models.fenced import FencedScaffold, fenced_gbnf, plain_schema
from thinkbox.models.install import locate_model
from thinkbox.models.openai_compat import OpenAICompatModel

HEAD = '{"thought": "gcd", "action": "execute_code", "final_answer": ""}'
GCD = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\nprint(gcd(12, 18))"
GOOD = HEAD + f"\n```python\n{GCD}\n```"
ANSWER = '{"thought": "done", "action": "provide_answer", "final_answer": "6"}'


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    """llama.cpp with the installed model's vocabulary only (no weights)."""
    try:
        import llama_cpp

        path = locate_model(load_settings())
    except (ImportError, OSError, ConfigError) as exc:
        pytest.skip(f"needs llama-cpp-python and the installed model: {exc}")
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def grammar_for(language: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from thinkbox.models.local import strict_strings

    schema = action_schema("fenced", language)
    return fenced_gbnf(strict_strings(json_schema_to_gbnf(json.dumps(plain_schema(schema)))), schema)


def accepts(llm: Any, grammar: str, text: str) -> bool:
    """Whether the grammar allows ``text``'s tokens in order and then the end of the reply."""
    from thinkbox.models.local_decode import GrammarChecker

    checker = GrammarChecker(llm, grammar)
    try:
        for token in [*llm.tokenize(text.encode(), add_bos=False, special=False), llm.token_eos()]:
            allowed = checker.mask(np.array([token], dtype=np.int32), np.zeros(1, dtype=np.float32))
            if not np.isfinite(allowed[0]):
                return False
            checker.accept(token)
        return True
    finally:
        checker.close()


def test_the_grammar_accepts_a_fenced_reply_and_an_answer(vocab: Any) -> None:
    grammar = grammar_for("py")
    assert accepts(vocab, grammar, GOOD)
    assert accepts(vocab, grammar, ANSWER)
    assert accepts(vocab, grammar, HEAD + "\n```python\nx = '```'\n```")  # backticks inside a line
    assert accepts(vocab, grammar, HEAD + "\n```python\nprint(1)\n")  # ended at a line start: see closing()


@pytest.mark.parametrize(
    "reply",
    [
        HEAD,  # code action without its block
        HEAD + "\n```python\nprint(1)",  # ended inside a line
        HEAD + "\n```python\nprint(1)\n``}`\n```",  # a line that starts with a backtick
        HEAD + "\n```python\nprint(1)\n```\n",  # anything after the closing fence
        HEAD + "\n```python\n```",  # empty block
        HEAD + "\n```javascript\nconsole.log(1)\n```",  # another language's block
        '{"thought": "t", "action": "execute_code", "code": "print(1)", "final_answer": ""}',  # code in JSON
        ANSWER + "\n```python\nprint(1)\n```",  # a block after an answer
        HEAD + "\n```python\nprint(1)\n```\nmore text",  # text after the block
        HEAD.replace('""}', '"6"}') + "\n```python\nprint(1)\n```",  # a guess while coding
    ],
)
def test_the_grammar_rejects_what_is_not_a_fenced_reply(vocab: Any, reply: str) -> None:
    assert not accepts(vocab, grammar_for("py"), reply)


def test_in_auto_the_block_s_tag_follows_the_language_key(vocab: Any) -> None:
    grammar = grammar_for("auto")
    js = '{"thought": "x", "action": "execute_code", "language": "js", "final_answer": ""}'
    assert accepts(vocab, grammar, js + "\n```javascript\nconsole.log(1)\n```")
    assert not accepts(vocab, grammar, js + "\n```python\nprint(1)\n```")


def test_the_scaffold_forces_the_block_s_opening_and_ends_at_its_close() -> None:
    scaffold = FencedScaffold.from_schema(action_schema("fenced", "py"))
    assert scaffold is not None
    assert scaffold.forced("") == ('{"thought": "', False)
    forced, complete = scaffold.forced('{"thought": "gcd", "action": "e')
    assert forced == 'xecute_code", "final_answer": ""}\n```python\n' and not complete
    assert scaffold.forced(HEAD + "\n") == ("```python\n", False)  # the model wrote the new line itself
    assert scaffold.forced(HEAD + "\n```python\nprint(1)") == ("", False)
    assert scaffold.forced(HEAD + "\n```python\nprint(1)\n```") == ("", True)
    forced, complete = scaffold.forced('{"thought": "done", "action": "p')
    assert forced.endswith('rovide_answer", "final_answer": "') and not complete
    assert scaffold.forced(ANSWER) == ("", True)


def test_a_reply_the_model_ends_inside_its_block_gets_the_closing_fence() -> None:
    scaffold = FencedScaffold.from_schema(action_schema("fenced", "py"))
    assert scaffold is not None
    assert scaffold.closing(HEAD + "\n```python\nprint(1)\n") == "```"
    assert scaffold.closing(HEAD + "\n```python\nprint(1)\n```") == ""
    assert scaffold.closing(ANSWER) == ""


async def test_an_endpoint_gets_no_response_format_for_a_fenced_schema(chat_server: ChatServer) -> None:
    model = OpenAICompatModel(base_url=chat_server.base_url, model="test-model")
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    reply = await complete(model, ModelRequest(messages=messages, json_schema=action_schema("fenced", "py")))
    await complete(model, ModelRequest(messages=messages, json_schema=action_schema("json", "py")))
    fenced_request, json_request = chat_server.state.requests
    assert "response_format" not in fenced_request and reply.constrained is False
    assert json_request["response_format"]["type"] == "json_schema"  # the level was not lowered for good
