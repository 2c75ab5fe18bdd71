"""/v1/tools: the tenant's tools (Python modules its sessions import as ``from tools.<name> import f``).

A tool is saved only when its tests pass in a fresh sandbox session: 201, else 422 with the failures in
``error.failures`` (``[{"test", "error"}]``). Another tenant's tools, and other users' private ones, do
not exist here (404).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from thinkbox.service.api.deps import Caller
from thinkbox.service.tools import ToolInfo, ToolRefused, check
from thinkbox.service.tools.spec import MAX_DESCRIPTION_CHARS, MAX_SOURCE_CHARS, ToolSpec

router = APIRouter(prefix="/v1/tools", tags=["tools"])
Name = Annotated[
    str,
    Path(max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The tool's name (tools.<name>)."),
]
MAX_VERSION = 2**31 - 1  # an INTEGER column on both databases
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A version number (from 1).")]


class ToolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="A Python identifier, not a standard module's name.")
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS, description="One line for the prompt.")
    source: str = Field(max_length=MAX_SOURCE_CHARS, description="The module: one or more functions.")
    tests: str = Field(
        "",
        max_length=MAX_SOURCE_CHARS,
        description="Test functions (def test_...(): assert ...) and/or >>> examples; needed unless the "
        "source's docstrings have >>> examples.",
    )
    packages: list[str] = Field(default_factory=list, max_length=50, description="Packages it needs.")
    secrets: list[str] = Field(
        default_factory=list, max_length=50, description="Names of the secrets it may use (kept for now)."
    )
    private: bool = Field(False, description="Visible only to you (else to every user of your tenant).")


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_VERSION, description="The version to make active again.")


class FunctionOut(BaseModel):
    name: str
    signature: str
    doc: str


class ToolOut(BaseModel):
    name: str
    version: int = Field(description="This version's number (from 1).")
    active_version: int = Field(description="The version sessions import.")
    description: str
    functions: list[FunctionOut]
    source: str
    tests: str
    packages: list[str]
    secrets: list[str]
    private: bool
    author: str = Field(description="The user who saved this version.")
    tests_passed: int
    created_at: float = Field(description="When this version was saved (unix seconds).")
    updated_at: float = Field(description="When the tool last changed (a save or a rollback).")
    usage: str = Field(description="How code imports it.")


class ToolList(BaseModel):
    tools: list[ToolOut]


class TestReport(BaseModel):
    passed: bool
    tests_passed: int


def _out(info: ToolInfo, *, code: bool = True) -> ToolOut:
    names = ", ".join(f.name for f in info.functions)
    return ToolOut(
        name=info.name,
        version=info.version,
        active_version=info.active_version,
        description=info.description,
        functions=[FunctionOut(name=f.name, signature=f.signature, doc=f.doc) for f in info.functions],
        source=info.source if code else "",
        tests=info.tests if code else "",
        packages=info.packages,
        secrets=info.secrets,
        private=info.private,
        author=info.author,
        tests_passed=info.tests_passed,
        created_at=info.created_at,
        updated_at=info.updated_at,
        usage=f"from tools.{info.name} import {names}",
    )


def _refused(exc: ToolRefused) -> JSONResponse:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, "failures": exc.failures}
    return JSONResponse({"error": body}, 422)


def _spec(body: ToolCreate) -> ToolSpec:
    return check(
        body.name, body.description, body.source, body.tests, body.packages, body.secrets, body.private
    )


REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"description": "Refused: invalid, does not import, or its tests fail (error.failures)."}
}


@router.get("", response_model=ToolList)
async def list_tools(caller: Caller) -> ToolList:
    """The tools your sessions can import (your tenant's and your private ones), active versions, by
    name; ``source`` and ``tests`` are left empty here (GET /v1/tools/{name} has them)."""
    infos = await asyncio.to_thread(caller.service.tools.list_tools, caller.principal)
    return ToolList(tools=[_out(info, code=False) for info in infos])


@router.post("", status_code=201, response_model=ToolOut, responses=REFUSED)
async def save_tool(body: ToolCreate, caller: Caller) -> ToolOut | JSONResponse:
    """Save a tool (or its next version): its tests run in a fresh sandbox session first; it is saved
    and becomes active only when they pass. Then ``from tools.<name> import <function>`` works in every
    session of your tenant (of yours only when ``private``)."""
    try:
        info = await caller.service.tools.save(caller.principal, _spec(body))
    except ToolRefused as exc:
        return _refused(exc)
    return _out(info)


@router.post("/test", response_model=TestReport, responses=REFUSED)
async def test_tool(body: ToolCreate, caller: Caller) -> TestReport | JSONResponse:
    """Run a tool's tests as a save would, without saving it."""
    try:
        passed = await caller.service.tools.test(caller.principal, _spec(body))
    except ToolRefused as exc:
        return _refused(exc)
    return TestReport(passed=True, tests_passed=passed)


@router.get("/{name}", response_model=ToolOut)
async def get_tool(name: Name, caller: Caller) -> ToolOut:
    """The tool's active version, with its source and tests."""
    return _out(await asyncio.to_thread(caller.service.tools.get, caller.principal, name))


@router.delete("/{name}", status_code=204)
async def delete_tool(name: Name, caller: Caller) -> Response:
    """Delete the tool and every version (sessions that imported it keep what they imported)."""
    await asyncio.to_thread(caller.service.tools.delete, caller.principal, name)
    return Response(status_code=204)


@router.get("/{name}/versions", response_model=ToolList)
async def list_versions(name: Name, caller: Caller) -> ToolList:
    """Every version of the tool, newest first (without source and tests)."""
    infos = await asyncio.to_thread(caller.service.tools.versions, caller.principal, name)
    return ToolList(tools=[_out(info, code=False) for info in infos])


@router.get("/{name}/versions/{version}", response_model=ToolOut)
async def get_version(name: Name, version: Version, caller: Caller) -> ToolOut:
    return _out(await asyncio.to_thread(caller.service.tools.get, caller.principal, name, version))


@router.post("/{name}/rollback", response_model=ToolOut)
async def rollback(name: Name, body: Rollback, caller: Caller) -> ToolOut:
    """Make an earlier version active again (sessions import it from now on)."""
    store = caller.service.tools
    return _out(await asyncio.to_thread(store.rollback, caller.principal, name, body.version))
