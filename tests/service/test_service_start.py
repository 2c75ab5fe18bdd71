"""The service loads its own model's weights from the start, in the background: ``/healthz`` and the rest of
the start do not wait for it, and the first run's request queues behind the load instead of starting one.

The model here is the scripted one with a ``load`` that waits for the test: what is checked is the
service's order of things (no llama.cpp involved); the embedded model's own ``load`` is exercised by the
model tests and ``thinkbox bench model``'s cold-start figures.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from thinkbox.models import factory
from thinkbox.models.scripted import ScriptedModel
from thinkbox.service.core import Service

from .service_support import service_settings


class SlowLoading(ScriptedModel):
    def __init__(self) -> None:
        super().__init__(["unused"])
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.loaded = False
        self.closed = False

    async def load(self) -> None:
        self.started.set()
        await self.release.wait()
        self.loaded = True

    async def aclose(self) -> None:
        self.closed = True


async def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Service, SlowLoading]:
    model = SlowLoading()

    def fake_get_model(settings: Any) -> SlowLoading:
        return model

    monkeypatch.setattr(factory, "get_model", fake_get_model)
    service = await Service.start(service_settings(tmp_path), resume=False)
    return service, model


async def test_the_service_starts_loading_its_model_at_start_without_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, model = await _start(tmp_path, monkeypatch)
    try:
        await asyncio.wait_for(model.started.wait(), 10)  # started before any run asked for it
        assert not model.loaded, "Service.start returned only after the load: it should not wait for it"
        model.release.set()
        await asyncio.wait_for(asyncio.shield(service._loading or asyncio.sleep(0)), 10)
        assert model.loaded
    finally:
        await service.aclose()
    assert model.closed


async def test_a_stop_during_the_load_cancels_it_and_still_closes_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, model = await _start(tmp_path, monkeypatch)
    await asyncio.wait_for(model.started.wait(), 10)
    await asyncio.wait_for(service.aclose(), 30)
    assert service._loading is not None and service._loading.cancelled()
    assert not model.loaded and model.closed
