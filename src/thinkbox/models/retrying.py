"""``RetryingModel``: the same interface, with exponential backoff on retryable model errors.

A retry happens only when the inner stream failed before any text reached the caller: once a delta is
out, the caller has shown it, and a second attempt would show a different reply after it. Such a failure
is raised as it is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from thinkbox.errors import ModelError
from thinkbox.models.base import ModelBackend, ModelEvent, ModelRequest, TextDelta

OnRetry = Callable[[ModelError, int, float], None]
"""Called before each retry with the error, the retry's number (1-based) and the delay in seconds."""


class RetryingModel:
    """Retries ``inner`` up to ``max_retries`` times, waiting ``base_delay * 2**n`` (jittered, capped)."""

    def __init__(
        self,
        inner: ModelBackend,
        max_retries: int = 3,
        base_delay: float = 1.0,
        *,
        max_delay: float = 30.0,
        on_retry: OnRetry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.on_retry = on_retry
        self._sleep = sleep
        self.retries = 0
        """Retries made over this object's life (for summaries and tests)."""

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): half fixed, half random ("equal jitter")."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        retry = 0
        while True:
            streamed = False
            try:
                async with aclosing(_as_generator(self.inner.stream(request))) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            streamed = True
                        yield event
                return
            except ModelError as exc:
                if not exc.retryable or streamed or retry >= self.max_retries:
                    raise
                retry += 1
                self.retries += 1
                wait = self.delay(retry)
                if self.on_retry is not None:
                    self.on_retry(exc, retry, wait)
            await self._sleep(wait)


async def _as_generator(events: AsyncIterator[ModelEvent]) -> AsyncGenerator[ModelEvent, None]:
    """Any async iterator as an async generator, so that it can be closed when the caller stops early."""
    try:
        async for event in events:
            yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
