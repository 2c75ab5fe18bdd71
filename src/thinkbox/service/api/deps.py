"""What every authenticated route needs: the caller (from the bearer key) and the service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from thinkbox.service import accounts
from thinkbox.service.accounts import Principal
from thinkbox.service.core import Service
from thinkbox.service.errors import ApiError

REVOKED = "invalid or revoked API key: ask an admin for a new one (thinkbox admin key create)"
_bearer = HTTPBearer(auto_error=False, description="An API key from `thinkbox admin key create TENANT USER`.")


@dataclass(frozen=True)
class CallerInfo:
    principal: Principal
    service: Service
    key_hash: str = field(default="", repr=False)
    """The sha256 of the bearer key ("" for a local caller without one, ``thinkbox mcp`` over stdio)."""


async def _caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> CallerInfo:
    key = credentials.credentials if credentials is not None else None
    return await authenticate(request.app.state.service, key)


async def authenticate(service: Service, key: str | None) -> CallerInfo:
    """Who the bearer ``key`` belongs to; 401 naming what to do when it is missing, unknown or revoked."""
    if not key:
        raise ApiError(401, "unauthorized", "missing API key: send the header Authorization: Bearer KEY")
    if len(key) > 200:
        raise ApiError(401, "unauthorized", "invalid API key (not one this service issued)")
    principal = await asyncio.to_thread(accounts.authenticate, service.db, key)
    if principal is None:
        raise ApiError(401, "unauthorized", REVOKED)
    return CallerInfo(principal, service, accounts.hash_key(key))


async def still_authorised(caller: CallerInfo) -> bool:
    """Whether the caller's key still works, as a new request would find: a stream asks before each part it
    sends, so a key revoked while its stream is open gets nothing more (at once when revoked in this
    process, within the auth cache's time when by another). Reads the database only when the cache
    has forgotten the key."""
    if not caller.key_hash:
        return True
    db = caller.service.db
    if accounts.cached_principal(db, caller.key_hash) is not None:
        return True
    return await asyncio.to_thread(accounts.authenticate_hash, db, caller.key_hash) is not None


Caller = Annotated[CallerInfo, Depends(_caller)]
