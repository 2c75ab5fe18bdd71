"""Fair sharing of scarce things (run slots, the model) across tenants.

A :class:`FairGate` has ``capacity`` slots. When they are all taken, waiters queue per tenant and a freed
slot goes to the tenants in turn (round robin over tenants that wait, first come first served within a
tenant): one tenant's fifty queued runs do not starve another tenant's one. :class:`FairModel` puts one
model behind such a gate, keyed by the run's tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator

from thinkbox.models.base import ModelBackend, ModelEvent, ModelRequest


class FairGate:
    """At most ``capacity`` holders at once; waiting tenants are served in turn."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.held = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, tenant: str) -> None:
        if self.held < self.capacity and not self._waiting:
            self.held += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted as we were cancelled: pass it on
                self.release()
            else:
                self._forget(tenant, future)
            raise

    def release(self) -> None:
        self.held -= 1
        while self._waiting and self.held < self.capacity:
            tenant, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            del self._waiting[tenant]
            if queue:  # the tenant goes to the back of the line
                self._waiting[tenant] = queue
            if not future.done():
                self.held += 1
                future.set_result(None)

    def _forget(self, tenant: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[tenant]


class FairModel:
    """``model`` for one tenant's run, each request waiting its turn at ``gate``."""

    def __init__(self, model: ModelBackend, gate: FairGate, tenant: str) -> None:
        self.model = model
        self.gate = gate
        self.tenant = tenant
        self.name = model.name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        async with self.gate.slot(self.tenant):
            async for event in self.model.stream(request):
                yield event
