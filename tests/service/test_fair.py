"""The fair gate: tenants waiting for run slots or the model are served in turn, not in arrival order."""

from __future__ import annotations

import asyncio

import pytest

from thinkbox.service.fair import FairGate


async def test_one_tenants_fifty_waiters_do_not_starve_another_tenants_one() -> None:
    gate = FairGate(1)
    order: list[str] = []

    async def use(tenant: str) -> None:
        async with gate.slot(tenant):
            order.append(tenant)
            await asyncio.sleep(0.001)

    busy = [asyncio.create_task(use("big")) for _ in range(50)]
    await asyncio.sleep(0)  # the big tenant's fifty are queued first
    small = asyncio.create_task(use("small"))
    await asyncio.gather(*busy, small)
    assert order.index("small") <= 2, order[:5]
    assert gate.held == 0 and gate.waiting == 0


async def test_tenants_alternate_and_capacity_holds() -> None:
    gate = FairGate(2)
    order: list[str] = []
    peak = 0

    async def use(tenant: str) -> None:
        nonlocal peak
        async with gate.slot(tenant):
            peak = max(peak, gate.held)
            order.append(tenant)
            await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(use(t)) for t in ["a"] * 6 + ["b"] * 6 + ["c"] * 6]
    await asyncio.gather(*tasks)
    assert peak == 2
    middle = order[2:14]  # once all are queued, each tenant gets every third slot
    assert all(middle.count(t) == 4 for t in "abc"), order


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = FairGate(1)
    await gate.acquire("a")
    waiter = asyncio.create_task(gate.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    assert gate.held == 0 and gate.waiting == 0
    await asyncio.wait_for(gate.acquire("c"), 1)
