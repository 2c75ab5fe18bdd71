"""The service loads its own model's weights while it starts, before it answers anything: the first run
does not wait for a load, and nothing the service writes can fall into the load (llama.cpp points the
process's stdout and stderr at /dev/null while it loads: an MCP client over stdio once lost its
``initialize`` reply to a load running beside it, and waited forever).

The model here is the scripted one with a ``load`` of its own: what is checked is the service's order of
things (no llama.cpp involved); the embedded model's load is exercised by the model tests (among them
``test_mcp_model_e2e``, the stdio case) and ``thinkbox bench model``'s cold-start figures.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from thinkbox.errors import ModelUnavailable
from thinkbox.models import factory
from thinkbox.models.scripted import ScriptedModel
from thinkbox.service.core import Service

from .service_support import service_settings


class Loading(ScriptedModel):
    def __init__(self, fails: bool = False) -> None:
        super().__init__(["unused"])
        self.fails = fails
        self.loads = 0
        self.loaded = False
        self.closed = False

    async def load(self) -> None:
        self.loads += 1
        await asyncio.sleep(0.2)  # a load that takes a while: start must wait for its end
        if self.fails:
            raise ModelUnavailable("no weights here")
        self.loaded = True

    async def aclose(self) -> None:
        self.closed = True


async def _start(model: Loading, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    def fake_get_model(settings: Any) -> Loading:
        return model

    monkeypatch.setattr(factory, "get_model", fake_get_model)
    return await Service.start(service_settings(tmp_path), resume=False)


async def test_the_service_has_loaded_its_model_when_its_start_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Loading()
    service = await _start(model, tmp_path, monkeypatch)
    try:
        assert model.loads == 1 and model.loaded, "the model was not loaded by the time the service started"
    finally:
        await service.aclose()
    assert model.closed


async def test_a_model_that_cannot_load_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Loading(fails=True)
    service = await _start(model, tmp_path, monkeypatch)  # the first run reports the failure instead
    try:
        assert model.loads == 1 and not model.loaded
    finally:
        await service.aclose()


async def test_a_model_passed_in_is_the_caller_s_to_load_and_close(tmp_path: Path) -> None:
    model = Loading()
    service = await Service.start(service_settings(tmp_path), model=model, resume=False)
    await service.aclose()
    assert model.loads == 0 and not model.closed
