"""Web search for the agent: ``web_search("query")`` in the model's code, run on the host side.

The sandbox has no network, so the search cannot run there. As with ``save_tool``
(:mod:`thinkbox.service.tools.inside`), the function defined in the session only *asks*: it sends the query
as a display item of the MIME type :data:`MIME`; after the step, :meth:`WebSearch.on_result` (a
:data:`~thinkbox.agent.loop.ResultHook`) reads the requests from the step's result, asks the configured
provider from the host, and the results (title, URL, snippet) come back in the step's observation with an
instruction to prefer them over memory. The action schema does not change: a search is code like any
other, and the model can search, read the results and compute in the steps that follow.

Providers (``search.provider``), one small class each behind :class:`Provider`:

- ``searxng``: a self-hosted SearxNG's JSON API, ``GET {search.url}/search?q=...&format=json``;
- ``brave``: the Brave Search API, ``GET .../res/v1/web/search?q=...`` with the key in
  ``X-Subscription-Token``;
- ``tavily``: ``POST .../search`` with a JSON body and the key as a bearer token.

With ``search.provider = "none"`` (the default) nothing is defined in the session and the prompt does not
mention searching. A provider that is down, slow, refuses the key or answers garbage gives the model a
clear observation (what failed and which setting to check), never an exception: the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx

from thinkbox.agent.loop import ResultHook
from thinkbox.config import SearchSettings, Settings
from thinkbox.models.base import Message
from thinkbox.sandbox.session import Session
from thinkbox.sandbox.types import ExecutionResult

MIME = "application/vnd.thinkbox.web-search+json"
MAX_REQUESTS_PER_STEP = 3
SNIPPET_CHARS = 300
PROMPT_SECTION = (
    'Web search: web_search("query") searches the web from outside the sandbox (the sandbox itself has no '
    "network); the results (title, URL, snippet) come in the step's output. Use it for facts you are not "
    "sure of or that change over time, prefer what the results say over your memory, and name the URL "
    "your answer comes from."
)
# The cell that defines web_search in the session (Python, standard library only: nothing of thinkbox is
# importable there). ``display`` is the session's own (a builtin of thinkbox's kernels).
DEFINE_CELL = f'''
def web_search(query, max_results=5):
    """Search the web (done outside the sandbox); the results come in this step's output."""
    import builtins, json

    class _WebSearchRequest:
        def _repr_mimebundle_(self, include=None, exclude=None):
            return {{{MIME!r}: json.dumps({{"query": str(query), "max_results": int(max_results)}})}}

        def __repr__(self):
            return "<web_search request>"

    show = globals().get("display") or getattr(builtins, "display", None)
    if not callable(show):
        raise RuntimeError("web_search works only in a thinkbox session")
    show(_WebSearchRequest())
    print(f"web_search: {{str(query)!r}} sent; the results follow below")
'''


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str = ""


class SearchFailed(Exception):
    """The provider could not give results; the message says why and which setting to check."""


class Provider(Protocol):
    name: str

    async def search(self, client: httpx.AsyncClient, query: str, limit: int) -> list[SearchResult]: ...


def _results(items: Any, snippet_key: str) -> list[SearchResult]:
    if not isinstance(items, list):
        raise ValueError("no list of results")
    found = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            snippet = str(item.get(snippet_key) or "")
            found.append(SearchResult(str(item.get("title") or ""), item["url"], snippet))
    return found


class SearxNG:
    name = "searxng"

    def __init__(self, settings: SearchSettings) -> None:
        assert settings.url is not None  # SearchSettings requires it
        self.url = settings.url.rstrip("/") + "/search"

    async def search(self, client: httpx.AsyncClient, query: str, limit: int) -> list[SearchResult]:
        response = await client.get(self.url, params={"q": query, "format": "json"})
        return _results(_json(response, self.name).get("results"), "content")[:limit]


class Brave:
    name = "brave"
    DEFAULT_URL: ClassVar[str] = "https://api.search.brave.com/res/v1/web/search"

    def __init__(self, settings: SearchSettings) -> None:
        self.url = settings.url or self.DEFAULT_URL
        self.key = settings.api_key.get_secret_value() if settings.api_key else ""

    async def search(self, client: httpx.AsyncClient, query: str, limit: int) -> list[SearchResult]:
        headers = {"X-Subscription-Token": self.key, "Accept": "application/json"}
        response = await client.get(self.url, params={"q": query, "count": limit}, headers=headers)
        web = _json(response, self.name).get("web") or {}
        return _results(web.get("results") if isinstance(web, dict) else None, "description")[:limit]


class Tavily:
    name = "tavily"
    DEFAULT_URL: ClassVar[str] = "https://api.tavily.com/search"

    def __init__(self, settings: SearchSettings) -> None:
        self.url = settings.url or self.DEFAULT_URL
        self.key = settings.api_key.get_secret_value() if settings.api_key else ""

    async def search(self, client: httpx.AsyncClient, query: str, limit: int) -> list[SearchResult]:
        body = {"query": query, "max_results": limit}
        response = await client.post(self.url, json=body, headers={"Authorization": f"Bearer {self.key}"})
        return _results(_json(response, self.name).get("results"), "content")[:limit]


PROVIDERS: dict[str, type[SearxNG | Brave | Tavily]] = {"searxng": SearxNG, "brave": Brave, "tavily": Tavily}


def _json(response: httpx.Response, name: str) -> dict[str, Any]:
    """The response's JSON object; SearchFailed naming the status or the garbage otherwise."""
    if response.status_code in (401, 403):
        raise SearchFailed(f"{name} refused the request (HTTP {response.status_code}): check search.api_key")
    if response.status_code >= 400:
        raise SearchFailed(f"{name} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        raise SearchFailed(f"{name} answered something that is not JSON ({response.text[:80]!r})") from None
    if not isinstance(data, dict):
        raise SearchFailed(f"{name} answered JSON that is not an object of results")
    return data


class WebSearch:
    """Search for one configuration: the session's function, the prompt's section, the step's results."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.provider: Provider = PROVIDERS[settings.provider](settings)

    async def search(self, query: str, limit: int | None = None) -> list[SearchResult]:
        """The provider's results for ``query``; :class:`SearchFailed` saying why when there are none."""
        limit = max(1, min(limit or self.settings.max_results, self.settings.max_results))
        where = f"{self.provider.name} at {getattr(self.provider, 'url', '')}"
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s, trust_env=False) as client:
                return await self.provider.search(client, query, limit)
        except httpx.TimeoutException:
            raise SearchFailed(f"{where} did not answer within {self.settings.timeout_s:g} s "
                               "(search.timeout_s)") from None  # fmt: skip
        except httpx.HTTPError as exc:
            raise SearchFailed(
                f"{where} could not be reached ({type(exc).__name__}): check search.url"
            ) from None
        except ValueError as exc:
            raise SearchFailed(f"{self.provider.name} answered JSON without results ({exc})") from None

    async def install(self, session: Session) -> bool:
        """Define ``web_search`` in ``session``; False when that failed (the run goes on without it)."""
        result = await session.execute(DEFINE_CELL, timeout=10)
        return result.ok

    async def on_result(self, result: ExecutionResult) -> str:
        """The results of the searches the step's code asked for ('' when it asked for none)."""
        requests = [d.mime[MIME] for d in result.display if MIME in d.mime][:MAX_REQUESTS_PER_STEP]
        notes = []
        for raw in requests:
            try:
                body = json.loads(raw)
                query, limit = str(body["query"]).strip(), int(body.get("max_results") or 0)
            except (ValueError, KeyError, TypeError):
                notes.append('web_search: the request could not be read; call web_search("your query")')
                continue
            try:
                notes.append(describe(query, await self.search(query, limit)))
            except SearchFailed as exc:
                notes.append(
                    f"web_search {query!r} failed: {exc}. Go on without it and say so in your answer."
                )
        return "\n\n".join(notes)


def describe(query: str, results: Sequence[SearchResult]) -> str:
    """What the model is told about one search's results."""
    if not results:
        return f"web_search {query!r}: no results. Try other words, or go on without it."
    lines = [f"web_search {query!r} results:"]
    for i, r in enumerate(results, 1):
        snippet = " ".join(r.snippet.split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 3] + "..."
        lines.append(f"{i}. {r.title or '(no title)'}\n   {r.url}" + (f"\n   {snippet}" if snippet else ""))
    lines.append("Prefer these results over your memory; name the URL your answer comes from.")
    return "\n".join(lines)


def configured(settings: Settings) -> WebSearch | None:
    """The search of ``settings``; None when no provider is configured or the agent writes no Python."""
    if settings.search.provider == "none" or settings.agent.language not in ("py", "auto"):
        return None
    return WebSearch(settings.search)


async def prepare(
    search: WebSearch, session: Session, messages: list[Message], system: str, hook: ResultHook | None
) -> ResultHook | None:
    """Make ``search`` available to a run: the function in ``session``, the section in the system prompt
    (``system`` when ``messages`` is empty, else added to its system message once), the results in the
    observations (``hook`` still called after it). Returns the run's hook."""
    if not await search.install(session):
        return hook
    if not messages:
        messages.append({"role": "system", "content": f"{system}\n\n{PROMPT_SECTION}"})
    elif messages[0]["role"] == "system" and PROMPT_SECTION not in messages[0]["content"]:
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{PROMPT_SECTION}"}

    async def on_result(result: ExecutionResult) -> str:
        notes = [await search.on_result(result), await hook(result) if hook is not None else ""]
        return "\n\n".join(n for n in notes if n)

    return on_result
