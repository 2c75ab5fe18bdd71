"""/v1/secrets: named credentials that code never sees (their values are never answered back).

``PUT /v1/secrets/{name}`` stores or replaces a secret (201 / 200); the user's own by default, the
tenant's with ``"scope": "tenant"`` (tenant admins only, 403 otherwise). Lists and reads show the name,
scope, rules and times, never the value. Inside the user's sessions the environment variable ``NAME``
holds a placeholder that the egress proxy replaces with the value on requests the rules allow. Another
user's or tenant's secret does not exist here (404). Bad input is a 422 naming what to fix.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from thinkbox.service.api.deps import Caller
from thinkbox.service.api.schemas import ErrorBody
from thinkbox.service.secrets import rules
from thinkbox.service.secrets.store import SecretInfo

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])
Name = Annotated[
    str,
    Path(
        max_length=200,
        description="The secret's name: an identifier (it becomes an environment variable of your sessions).",
    ),
]
ScopeQuery = Annotated[
    Literal["user", "tenant"] | None,
    Query(description="user (yours) or tenant (tenant-wide); default: the one your sessions use."),
]
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Tenant-wide secrets are for tenant admins."}
}


class SecretPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="The secret's value (8 characters to 64 KiB); never shown again.")
    hosts: list[str] = Field(
        description="Hosts it may be sent to: host or host:port patterns (*.example.com: sub-domains)."
    )
    header: str | None = Field(
        None,
        description="How it is sent, e.g. 'Authorization: Bearer {secret}'; default: the placeholder is "
        "replaced wherever code puts it in a request's headers.",
    )
    paths: list[str] = Field(
        default_factory=list, description="Path prefixes it may be sent to (default any)."
    )
    methods: list[str] = Field(
        default_factory=list, description="HTTP methods it may be sent with (default any)."
    )
    scope: Literal["user", "tenant"] = Field("user", description="Yours, or your whole tenant's (admins).")


class SecretOut(BaseModel):
    name: str
    scope: Literal["user", "tenant"]
    hosts: list[str]
    header: str | None
    paths: list[str]
    methods: list[str]
    created_at: float = Field(description="Unix seconds.")
    updated_at: float = Field(description="When its value or rules last changed (unix seconds).")
    last_used_at: float | None = Field(description="When the proxy last sent it (unix seconds).")
    active: bool = Field(description="Your sessions use it (false: your own secret of this name hides it).")
    usage: str = Field(description="How code uses it.")


class SecretList(BaseModel):
    secrets: list[SecretOut]


def _out(info: SecretInfo) -> SecretOut:
    return SecretOut(
        name=info.name,
        scope=info.scope,
        hosts=info.hosts,
        header=info.header,
        paths=info.paths,
        methods=info.methods,
        created_at=info.created_at,
        updated_at=info.updated_at,
        last_used_at=info.last_used_at,
        active=info.active,
        usage=f"os.environ[{info.name!r}] in a session holds a placeholder; the proxy sends the value to "
        f"{', '.join(info.hosts)} only",
    )


@router.put(
    "/{name}",
    status_code=201,
    response_model=SecretOut,
    responses={200: {"model": SecretOut, "description": "Replaced."}, **FORBIDDEN},
)
async def put_secret(name: Name, body: SecretPut, caller: Caller, response: Response) -> SecretOut:
    """Store a secret (201), or replace its value and rules (200). The value is encrypted at rest and
    never answered back; your sessions see a placeholder in the environment variable ``name``."""
    rules.check_name(name)
    value = rules.check_value(body.value)
    checked = rules.check_rules(body.hosts, body.header, body.paths, body.methods)
    store = caller.service.secrets
    info, created = await asyncio.to_thread(store.put, caller.principal, name, value, checked, body.scope)
    response.status_code = 201 if created else 200
    return _out(info)


@router.get("", response_model=SecretList)
async def list_secrets(caller: Caller) -> SecretList:
    """Your secrets and your tenant's, by name: rules and times, never values."""
    infos = await asyncio.to_thread(caller.service.secrets.list_secrets, caller.principal)
    return SecretList(secrets=[_out(info) for info in infos])


@router.get("/{name}", response_model=SecretOut)
async def get_secret(name: Name, caller: Caller, scope: ScopeQuery = None) -> SecretOut:
    """One secret's rules and times (never its value)."""
    return _out(await asyncio.to_thread(caller.service.secrets.get, caller.principal, name, scope))


@router.delete("/{name}", status_code=204, responses=FORBIDDEN)
async def delete_secret(
    name: Name,
    caller: Caller,
    scope: Annotated[
        Literal["user", "tenant"], Query(description="user (yours) or tenant (tenant-wide, admins).")
    ] = "user",
) -> Response:
    """Delete a secret: sessions started from now on no longer get it."""
    await asyncio.to_thread(caller.service.secrets.delete, caller.principal, name, scope)
    return Response(status_code=204)
