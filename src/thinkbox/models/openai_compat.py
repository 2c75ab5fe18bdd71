"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio).

Talks through the official ``openai`` SDK (``AsyncOpenAI``) with the SDK's own retries off: retrying is
:class:`thinkbox.models.retrying.RetryingModel`'s job. Every SDK or transport error is translated here into
a :mod:`thinkbox.errors` ``ModelError`` whose message names the setting that fixes it.

Servers differ in what they accept. A request asks for the most it can use (usage in the stream,
``response_format`` with the JSON schema) and, when the server answers 400 about it, steps down
(strict ``json_schema`` -> non-strict ``json_schema`` -> ``json_object`` -> no format; usage -> no usage).
OpenAI's strict mode refuses schemas with ``anyOf`` at the root, which vLLM and llama.cpp enforce happily,
hence the non-strict step. What worked is remembered for the next requests of the same model object.
A schema whose reply goes on after the JSON (a fenced code block, :mod:`thinkbox.models.fenced`) is sent
with no response format: none can describe it, and the agent's parser reads such replies tolerantly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

from thinkbox.config import Settings
from thinkbox.errors import (
    ConfigError,
    ContextOverflow,
    ModelAuthError,
    ModelError,
    ModelNotFound,
    ModelTimeout,
    ModelUnavailable,
)
from thinkbox.models.base import ModelEvent, ModelReply, ModelRequest, TextDelta, Usage
from thinkbox.models.fenced import is_fenced

PLACEHOLDER_KEY = "not-needed"
"""Sent when no key is configured: local servers ignore it, and the SDK insists on one."""
_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|exceeds? the (?:available )?context", re.IGNORECASE
)
"""A 400 that says the prompt is too long: no request option dropped would make it fit."""

FormatLevel = Literal["json_schema", "json_schema_loose", "json_object", "none"]
_FORMAT_LADDER: tuple[FormatLevel, ...] = ("json_schema", "json_schema_loose", "json_object", "none")

_BASE_URL = "THINKBOX_MODEL__BASE_URL"
_API_KEY = "THINKBOX_MODEL__API_KEY"
_NAME = "THINKBOX_MODEL__NAME"
_TIMEOUT = "THINKBOX_MODEL__TIMEOUT_S"


class OpenAICompatModel:
    """A chat-completions endpoint; ``timeout_s`` bounds connecting, each wait and the whole reply."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.timeout_s = timeout_s
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.format_level: FormatLevel = "json_schema"
        """The strongest ``response_format`` this server has not refused."""
        self.stream_usage = True
        """Whether to ask for usage in the stream (``stream_options.include_usage``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAICompatModel:
        m = settings.model
        if not m.base_url:
            raise ConfigError(
                "the openai provider needs an endpoint: set THINKBOX_MODEL__BASE_URL "
                "(e.g. https://api.openai.com/v1 or http://localhost:11434/v1)"
            )
        key = m.api_key.get_secret_value() if m.api_key is not None else None
        return cls(base_url=m.base_url, model=m.name, api_key=key, timeout_s=m.timeout_s)

    def _client_now(self) -> AsyncOpenAI:
        """The SDK client of the running event loop (an HTTP connection pool belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncOpenAI(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if is_fenced(request.json_schema):  # code follows the JSON: no response format can describe it
            request = dataclasses.replace(request, json_schema=None)
        client = self._client_now()
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        response = await self._open(client, request)
        pieces: list[str] = []
        usage = Usage()
        finish_reason: str | None = None
        try:
            async for chunk in response:
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        pieces.append(text)
                        yield TextDelta(text)
                if asyncio.get_running_loop().time() > deadline:
                    raise ModelTimeout(
                        f"the model at {self.base_url} was still writing after {self.timeout_s:g}s; "
                        f"raise {_TIMEOUT} or lower THINKBOX_MODEL__MAX_TOKENS"
                    )
        except ModelError:
            raise
        except (openai.OpenAIError, OSError) as exc:
            raise await self._translate(exc) from exc
        except Exception as exc:
            if _is_transport_error(exc):
                raise await self._translate(exc) from exc
            raise
        finally:
            await response.close()
        if finish_reason is None:  # the connection closed before the server said the reply was complete
            raise ModelUnavailable(
                f"the model endpoint {self.base_url} closed the stream before the reply was complete; "
                f"check the server (and {_BASE_URL} if a proxy is in between)",
                retryable=True,
            )
        yield ModelReply(
            text="".join(pieces),
            usage=usage,
            finish_reason=finish_reason,
            constrained=request.json_schema is not None and self.format_level == "json_schema",
        )

    async def _open(self, client: AsyncOpenAI, request: ModelRequest) -> Any:
        """Start the streaming request, dropping what the server refuses with 400; remember what worked."""
        level = self.format_level if request.json_schema is not None else "none"
        usage = self.stream_usage
        first_error: openai.BadRequestError | None = None
        while True:
            kwargs = self._arguments(request, level, usage)
            try:
                response = await client.chat.completions.create(**kwargs)
            except openai.BadRequestError as exc:
                if _CONTEXT_OVERFLOW.search(str(exc)):
                    raise await self._translate(exc) from exc
                first_error = first_error or exc
                step = _step_down(str(exc), level, usage)
                if step is None:
                    raise await self._translate(first_error) from first_error
                level, usage = step
                continue
            except (openai.OpenAIError, OSError) as exc:
                raise await self._translate(exc) from exc
            except Exception as exc:
                if _is_transport_error(exc):
                    raise await self._translate(exc) from exc
                raise
            if request.json_schema is not None:
                self.format_level = level
            self.stream_usage = usage
            return response

    def _arguments(self, request: ModelRequest, level: FormatLevel, usage: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if usage:
            kwargs["stream_options"] = {"include_usage": True}
        if request.json_schema is not None and level in ("json_schema", "json_schema_loose"):
            strict = level == "json_schema"
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": request.json_schema, "strict": strict},
            }
        elif request.json_schema is not None and level == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    async def _translate(self, exc: BaseException) -> ModelError:
        """An SDK or transport error as the ``ModelError`` a user can act on."""
        if isinstance(exc, openai.APITimeoutError) or _is_timeout(exc):
            return ModelTimeout(
                f"the model at {self.base_url} did not answer within {self.timeout_s:g}s; "
                f"raise {_TIMEOUT} or check that the server is not overloaded"
            )
        if isinstance(exc, openai.APIConnectionError | OSError) or _is_transport_error(exc):
            refused = _cause_matches(exc, (ConnectionRefusedError, socket.gaierror))
            reason = _root_reason(exc)
            return ModelUnavailable(
                f"cannot reach the model endpoint {self.base_url} ({reason}); check {_BASE_URL} "
                "and that the server is running",
                retryable=not refused,
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ModelAuthError(
                f"the model endpoint {self.base_url} refused the API key (HTTP {exc.status_code}: "
                f"{_server_message(exc)}); set {_API_KEY} (or OPENAI_API_KEY)"
            )
        if isinstance(exc, openai.NotFoundError):
            served = await self._served_models()
            if served is None:
                hint = f"check {_NAME}, and that {_BASE_URL} is the API root (it often ends in /v1)"
            else:
                hint = f"set {_NAME} to one the server has: {', '.join(served) or '(none listed)'}"
            return ModelNotFound(
                f"the model {self.model!r} was not found at {self.base_url} ({_server_message(exc)}); {hint}"
            )
        if isinstance(exc, openai.RateLimitError):
            return ModelUnavailable(
                f"the model endpoint {self.base_url} is rate limiting (HTTP 429: {_server_message(exc)}); "
                "THINKBOX_MODEL__MAX_RETRIES sets how often thinkbox retries",
                retryable=True,
            )
        if isinstance(exc, openai.BadRequestError) and _CONTEXT_OVERFLOW.search(str(exc)):
            return ContextOverflow(
                f"the conversation is longer than the context of {self.model!r} at {self.base_url} "
                f"({_server_message(exc)}); use a model with a longer context or ask a shorter question"
            )
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500:
                return ModelUnavailable(
                    f"the model endpoint {self.base_url} failed (HTTP {exc.status_code}: "
                    f"{_server_message(exc)})",
                    retryable=True,
                )
            return ModelError(
                f"the model endpoint {self.base_url} rejected the request (HTTP {exc.status_code}: "
                f"{_server_message(exc)})"
            )
        return ModelError(f"the model endpoint {self.base_url} gave an unusable answer: {exc}")

    async def _served_models(self) -> list[str] | None:
        """Model ids from ``GET /models``, or None when that does not answer."""
        try:
            client = self._client_now().with_options(timeout=min(self.timeout_s, 5.0))
            page = await client.models.list()
            return sorted(m.id for m in page.data)
        except (openai.OpenAIError, OSError):
            return None
        except Exception as exc:
            if _is_transport_error(exc):
                return None
            raise


def _step_down(message: str, level: FormatLevel, usage: bool) -> tuple[FormatLevel, bool] | None:
    """What to ask for next after a 400 ``message``; None when there is nothing left to drop."""
    text = message.lower()
    about_usage = "stream_options" in text or "include_usage" in text
    format_words = ("response_format", "json_schema", "json_object", "schema", "grammar", "strict")
    about_format = any(w in text for w in format_words)
    weaker = _FORMAT_LADDER[_FORMAT_LADDER.index(level) + 1] if level != "none" else None
    if about_usage and usage:
        return level, False
    if about_format and weaker is not None:
        return weaker, usage
    if about_usage or about_format:
        return None
    # The server did not say what it disliked: drop the format first (most often refused), then usage.
    if weaker is not None:
        return weaker, usage
    if usage:
        return level, False
    return None


def _usage(raw: Any) -> Usage:
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(
        prompt_tokens=raw.prompt_tokens or 0,
        completion_tokens=raw.completion_tokens or 0,
        cached_tokens=cached,
    )


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _is_timeout(exc: BaseException) -> bool:
    """An HTTP library's timeout (httpx / httpx2 ``TimeoutException``), wherever it sits in the chain."""
    return any(isinstance(e, TimeoutError) or "TimeoutException" in _class_names(e) for e in _chain(exc))


def _is_transport_error(exc: BaseException) -> bool:
    """An HTTP library's transport failure (``httpx.TransportError`` and kin), which the SDK may not wrap
    while a stream is being read."""
    return bool(_class_names(exc) & {"TransportError", "NetworkError", "RemoteProtocolError", "ReadError"})


def _cause_matches(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    for e in _chain(exc):
        if isinstance(e, kinds):
            return True
        text = str(e).lower()
        if "connection refused" in text or "name or service not known" in text or "nodename nor" in text:
            return True
    return False


def _root_reason(exc: BaseException) -> str:
    chain = _chain(exc)
    for e in reversed(chain):
        if str(e):
            return str(e)
    return type(exc).__name__
