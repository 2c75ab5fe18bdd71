"""/v1/files: the caller's folder (``?scope=tenant``: the tenant's shared folder), as sandbox sessions see it.

Paths are relative; ``..``, absolute paths, NUL bytes, over-long names and symlinks that lead out are
refused with 400 before anything is touched (:mod:`thinkbox.service.storage` checks them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from thinkbox.service.api.deps import Caller
from thinkbox.service.api.schemas import FileEntry, FileList, Scope
from thinkbox.service.errors import ApiError

router = APIRouter(prefix="/v1/files", tags=["files"])
ScopeQuery = Annotated[Scope, Query(description="user: your folder (default); tenant: the shared folder.")]
_CHUNK = 256 * 1024


@router.get("", response_model=FileList)
async def list_files(caller: Caller, scope: ScopeQuery = "user") -> FileList:
    """Every file and folder, recursively, with sizes and modification times; the quota in use."""
    storage, who = caller.service.storage, caller.principal
    entries = await asyncio.to_thread(storage.list, who.tenant_name, who.user_name, scope)
    usage = await asyncio.to_thread(storage.usage, who.tenant_name, who.user_name)
    if scope == "user":
        used = (usage.user_bytes, usage.user_files, storage.user_quota_bytes, storage.user_quota_files)
    else:
        used = (
            usage.tenant_bytes,
            usage.tenant_files,
            storage.tenant_quota_bytes,
            storage.tenant_quota_files,
        )
    return FileList(
        scope=scope,
        files=[_entry(e) for e in entries],
        used_bytes=used[0],
        used_files=used[1],
        quota_bytes=used[2],
        quota_files=used[3],
    )


@router.put(
    "/{path:path}",
    status_code=201,
    response_model=FileEntry,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def put_file(path: str, request: Request, caller: Caller, scope: ScopeQuery = "user") -> FileEntry:
    """Write the raw request body to ``path`` (parent folders are made; an existing file is replaced).
    413 past ``service.max_upload_mib`` or a quota, nothing written."""
    storage, who = caller.service.storage, caller.principal
    limit = storage.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(
            413,
            "too_large",
            f"the upload has {int(length):,} bytes, more than the limit of "
            f"{limit:,} (service.max_upload_mib)",
        )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(
                413,
                "too_large",
                f"the upload is larger than the limit of {limit:,} bytes (service.max_upload_mib)",
            )
    entry = await asyncio.to_thread(storage.write, who.tenant_name, who.user_name, scope, path, bytes(body))
    return _entry(entry)


@router.get("/{path:path}", responses={200: {"content": {"application/octet-stream": {}}}})
async def get_file(path: str, caller: Caller, scope: ScopeQuery = "user") -> StreamingResponse:
    """The file's bytes, as a download (``Content-Disposition: attachment``): sandbox code or a tenant mate
    may have written an HTML or SVG page meant to run in a browser that opens it from this origin."""
    storage, who = caller.service.storage, caller.principal
    handle = await asyncio.to_thread(storage.read, who.tenant_name, who.user_name, scope, path)
    size = _size(handle)
    name = quote(path.rstrip("/").rsplit("/", 1)[-1], safe="")
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{name}", "Cache-Control": "no-store"}
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream", headers=headers)


@router.delete("/{path:path}", status_code=204)
async def delete_file(path: str, caller: Caller, scope: ScopeQuery = "user") -> Response:
    """Delete a file (or an empty folder)."""
    storage, who = caller.service.storage, caller.principal
    await asyncio.to_thread(storage.delete, who.tenant_name, who.user_name, scope, path)
    return Response(status_code=204)


def _entry(entry: Any) -> FileEntry:
    return FileEntry(path=entry.path, size=entry.size, modified=entry.modified, is_dir=entry.is_dir)


def _size(handle: Any) -> int | None:
    try:
        return os.fstat(handle.fileno()).st_size
    except (OSError, AttributeError):
        return None


async def _chunks(handle: Any) -> AsyncIterator[bytes]:
    def read() -> bytes:
        data: bytes = handle.read(_CHUNK)
        return data

    try:
        while chunk := await asyncio.to_thread(read):
            yield chunk
    finally:
        handle.close()
