"""Web search: each provider against a real local HTTP server with canned results, its failures as clear
observations, and ``web_search`` in a run (scripted model, real sandbox) only when a provider is set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from search_server import canned_search

from thinkbox.agent.events import CodeRejected, ExecutionFinished, FinalAnswer, RunFinished
from thinkbox.agent.route import run_routed
from thinkbox.agent.search import PROMPT_SECTION, SearchFailed, WebSearch
from thinkbox.config import SearchSettings, Settings, load_settings, masked_dump
from thinkbox.errors import ConfigError
from thinkbox.models.scripted import ScriptedModel
from thinkbox.sandbox.session import Session

pytestmark = pytest.mark.asyncio(loop_scope="session")


def search_settings(provider: str, url: str, **extra: Any) -> SearchSettings:
    return SearchSettings(provider=provider, url=url, **extra)  # type: ignore[arg-type]


def settings_with(tmp_path: Path, **search: Any) -> Settings:
    return Settings(data_dir=tmp_path / "d", cache_dir=tmp_path / "c", search=search)  # type: ignore[arg-type]


async def test_searxng_is_asked_for_json_and_its_results_come_with_urls() -> None:
    with canned_search() as server:
        results = await WebSearch(search_settings("searxng", server.url + "/")).search("capital of France")
        (seen,) = server.seen
    assert (seen.method, seen.path) == ("GET", "/search")
    assert seen.query == {"q": ["capital of France"], "format": ["json"]}
    assert [r.url for r in results] == ["https://en.wikipedia.org/wiki/Paris", "https://example.org/france"]
    assert results[0].snippet == "Paris is the capital of France."


async def test_brave_gets_the_key_in_its_header_and_its_results_are_read() -> None:
    with canned_search() as server:
        web = WebSearch(
            search_settings("brave", server.url + "/res/v1/web/search", api_key="brv-123", max_results=1)
        )
        results = await web.search("capital of France")
        (seen,) = server.seen
    assert seen.method == "GET" and seen.headers["X-Subscription-Token"] == "brv-123"
    assert seen.query["q"] == ["capital of France"] and seen.query["count"] == ["1"]
    assert [(r.title, r.url) for r in results] == [
        ("Paris - Wikipedia", "https://en.wikipedia.org/wiki/Paris")
    ]


async def test_tavily_gets_a_json_post_with_the_key_and_its_results_are_read() -> None:
    with canned_search() as server:
        results = await WebSearch(search_settings("tavily", server.url + "/search", api_key="tvly-9")).search(
            "q1"
        )
        (seen,) = server.seen
    assert seen.method == "POST" and seen.body == {"query": "q1", "max_results": 5}
    assert seen.headers["Authorization"] == "Bearer tvly-9"
    assert len(results) == 2 and results[1].url == "https://example.org/france"


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("unauthorized", "HTTP 401): check search.api_key"),
        ("garbage", "not JSON"),
        ("slow", "search.timeout_s"),
    ],
)
async def test_a_failing_provider_raises_search_failed_naming_what_to_check(mode: str, needle: str) -> None:
    with canned_search() as server:
        server.mode = mode
        web = WebSearch(search_settings("tavily", server.url + "/search", api_key="bad", timeout_s=0.5))
        with pytest.raises(SearchFailed, match=re.escape(needle)):
            await web.search("q")


async def test_a_provider_that_is_down_is_named_with_its_url() -> None:
    with canned_search() as server:
        url = server.url
    with pytest.raises(SearchFailed, match=r"searxng at http://127\.0\.0\.1:\d+/search could not be reached"):
        await WebSearch(search_settings("searxng", url)).search("q")


async def test_settings_name_what_a_provider_needs_and_mask_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.url"):
        load_settings(search={"provider": "searxng"})
    with pytest.raises(ConfigError, match=r"search\.api_key"):
        load_settings(search={"provider": "brave"})
    with pytest.raises(ConfigError, match="http"):
        load_settings(search={"provider": "searxng", "url": "localhost:8888"})
    dumped = masked_dump(settings_with(tmp_path, provider="tavily", api_key="tvly-secret-key"))
    assert "tvly-secret-key" not in str(dumped) and dumped["search"]["provider"] == "tavily"


def code(text: str) -> dict[str, str]:
    return {"thought": "look it up", "action": "execute_code", "code": text, "final_answer": ""}


def answer(text: str) -> dict[str, str]:
    return {"thought": "done", "action": "provide_answer", "code": "", "final_answer": text}


async def run(session: Session, settings: Settings, model: ScriptedModel) -> list[Any]:
    return [e async for e in run_routed("What is the capital of France?", model=model, session=session,
                                        settings=settings, route="code")]  # fmt: skip


async def test_a_run_searches_from_the_host_and_the_model_sees_results_with_urls(
    session: Session, tmp_path: Path
) -> None:
    with canned_search() as server:
        settings = settings_with(tmp_path, provider="searxng", url=server.url)
        model = ScriptedModel([code('web_search("capital of France")'), answer("Paris")])
        events = await run(session, settings, model)
        assert [s.query["q"] for s in server.seen] == [["capital of France"]]
    assert PROMPT_SECTION in model.requests[0].messages[0]["content"]
    (finished,) = [e for e in events if isinstance(e, ExecutionFinished)]
    assert "https://en.wikipedia.org/wiki/Paris" in finished.observation
    assert "Prefer these results over your memory" in finished.observation
    assert model.requests[1].messages[-1]["content"] == finished.observation
    assert [e.answer for e in events if isinstance(e, FinalAnswer)] == ["Paris"]


async def test_a_provider_that_is_down_is_an_observation_and_the_run_goes_on(
    session: Session, tmp_path: Path
) -> None:
    with canned_search() as server:
        url = server.url
    settings = settings_with(tmp_path, provider="searxng", url=url)
    model = ScriptedModel([code('web_search("capital of France")'), answer("Paris, from memory")])
    events = await run(session, settings, model)
    (finished,) = [e for e in events if isinstance(e, ExecutionFinished)]
    assert "failed" in finished.observation and "could not be reached" in finished.observation
    assert isinstance(events[-1], RunFinished) and events[-1].status == "answered"


async def test_bad_json_from_the_provider_is_an_observation_too(session: Session, tmp_path: Path) -> None:
    with canned_search() as server:
        server.mode = "garbage"
        settings = settings_with(tmp_path, provider="tavily", url=server.url + "/search", api_key="k")
        model = ScriptedModel([code('web_search("x")'), answer("?")])
        events = await run(session, settings, model)
    (finished,) = [e for e in events if isinstance(e, ExecutionFinished)]
    assert "not JSON" in finished.observation and events[-1].status == "answered"


async def test_without_a_provider_search_is_neither_defined_nor_mentioned(
    session: Session, tmp_path: Path
) -> None:
    model = ScriptedModel([code('web_search("capital of France")'), answer("Paris")])
    events = await run(session, settings_with(tmp_path), model)
    assert "web_search" not in model.requests[0].messages[0]["content"]
    # the lint check (agent.lint, on) refuses the call before it runs: the session has no such name
    (rejected,) = [e for e in events if isinstance(e, CodeRejected)]
    assert any("web_search" in problem for problem in rejected.problems), rejected.problems
    probe = await session.execute("print('web_search' in globals())")
    assert probe.stdout.strip() == "False"


async def test_the_sandbox_itself_gets_no_network_for_the_search(session: Session, tmp_path: Path) -> None:
    with canned_search() as server:
        settings = settings_with(tmp_path, provider="searxng", url=server.url)
        probe = (
            "import urllib.request\n"
            f"try:\n    urllib.request.urlopen({server.url + '/search?q=x&format=json'!r}, timeout=3)\n"
            "    print('REACHED')\nexcept Exception as exc:\n    print('blocked', type(exc).__name__)"
        )
        model = ScriptedModel([code(probe), answer("done")])
        events = await run(session, settings, model)
        assert server.seen == []  # only the host may reach the provider
    (finished,) = [e for e in events if isinstance(e, ExecutionFinished)]
    assert "blocked" in finished.result.stdout and "REACHED" not in finished.result.stdout
