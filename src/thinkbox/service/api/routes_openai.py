"""The OpenAI-compatible API: chat apps and OpenAI clients talk to the agent (``/v1/chat/completions``).

A thin layer over the same :class:`~thinkbox.service.runs.RunManager` as ``/v1/runs``: a completion is a
run. The agent answers the last user message; the conversation is kept in one sandbox session, found by
its key (:mod:`thinkbox.service.conversations` says which key wins: ``user``, then
``metadata.conversation_id``, then the header ``X-Thinkbox-Conversation``, then a hash of the earlier
messages). A conversation without a live session gets a new one, with its earlier messages as context.
The client's system messages are not passed on (the agent has its own system prompt), nor are image parts
of earlier messages (the last message must be the user's, in text); sampling fields (``temperature``,
``max_tokens``, ...) are accepted and ignored, fields that ignoring would betray (``n`` > 1, ``tools``, ...)
are refused (:mod:`.openai_schemas`).

The answer is the message's ``content``; the thoughts, code and outputs are ``reasoning_content`` (the
field reasoning models use, which chat apps show folded). ``stream: true`` sends them as they happen, as
``chat.completion.chunk`` server-sent events, then a last chunk with ``finish_reason`` and ``usage``,
then ``data: [DONE]``. A client that goes away before the answer (mid-stream, or at its timeout) cancels
its run. ``finish_reason`` is ``length`` when a limit ended the run without an answer (the content then
says which limit). A run that fails is a 500 with ``x-should-retry: false`` (OpenAI's SDKs would otherwise
run it twice more), or a 503 when the failure is transient.

Errors on these routes have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(:func:`is_openai_path` tells the app's error handlers); invalid requests are answered 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from thinkbox.agent.events import parse_event
from thinkbox.agent.loop import MAX_QUESTION_CHARS
from thinkbox.agent.reply_format import system_prompt
from thinkbox.service.api.deps import REVOKED, Caller, CallerInfo, still_authorised
from thinkbox.service.api.openai_render import IMAGE_DIR, IMAGE_TYPES, ChatRender, image_is_ours
from thinkbox.service.api.openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatRequest,
    Choice,
    ModelCard,
    ModelList,
    OpenAIError,
    openai_error,
)
from thinkbox.service.api.sse import frame
from thinkbox.service.conversations import Turn, context_messages, history_hash
from thinkbox.service.core import Service
from thinkbox.service.db.models import Run, Tenant, User
from thinkbox.service.errors import ApiError
from thinkbox.service.storage import StorageError

router = APIRouter(prefix="/v1", tags=["openai"])
OPENAI_PATHS = ("/v1/chat/", "/v1/models")
MODEL = "thinkbox"
KEEPALIVE_S = 15.0
_NO_IMAGE = "no such image (the link is wrong, or the image was deleted)"
"""One answer for every missing image: whether the run exists is not said (the route needs no key)."""
_IMAGE_NAME = r"^[0-9]{1,6}-[0-9a-f]{32}\.(png|jpeg|gif|webp)$"
_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": OpenAIError} for c in (400, 401, 404, 409, 429)}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


@router.get("/models", response_model=ModelList, responses=_ERRORS)
async def list_models(caller: Caller) -> ModelList:
    """``thinkbox`` (the agent with the service's model) and ``thinkbox:<model>`` (the same, named)."""
    created = int(caller.service.started_at)
    return ModelList(data=[ModelCard(id=m, created=created) for m in _model_ids(caller.service)])


@router.get("/models/{model:path}", response_model=ModelCard, responses=_ERRORS)
async def get_model(model: Annotated[str, Path(max_length=200)], caller: Caller) -> ModelCard:
    """One of :func:`list_models`' models (what OpenAI's ``models.retrieve`` asks)."""
    if model not in _model_ids(caller.service):
        raise _no_model(caller.service, model)
    return ModelCard(id=model, created=int(caller.service.started_at))


def _no_model(service: Service, model: str) -> ApiError:
    return ApiError(
        404, "model_not_found", f"no model {model!r} here; use one of {_model_ids(service)}", param="model"
    )


def _model_ids(service: Service) -> list[str]:
    return [MODEL, f"{MODEL}:{service.model.name}"]


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatRequest,
    request: Request,
    caller: Caller,
    x_thinkbox_conversation: Annotated[str | None, Header(max_length=256)] = None,
) -> Any:
    """The agent answers the last user message, in the conversation's session."""
    service, who = caller.service, caller.principal
    if body.model not in _model_ids(service):
        raise _no_model(service, body.model)
    if (refused := body.unsupported()) is not None:
        raise ApiError(400, "unsupported_parameter", refused[1], param=refused[0])
    earlier, question = body.split()
    if len(question.strip()) > MAX_QUESTION_CHARS:  # check_question's message names a CLI flag
        raise ApiError(
            400,
            "bad_question",
            f"the last user message has {len(question.strip()):,} characters, more than the limit of "
            f"{MAX_QUESTION_CHARS:,}; save long material as a file (PUT /v1/files/{{path}}) and ask about it",
            param="messages",
        )
    key = _conversation_key(body, x_thinkbox_conversation, earlier)
    session_id, fresh = await _session_for(caller, key, earlier)
    try:
        row = await service.runs.submit(who, question, session_id, [])
    except BaseException:
        if fresh:
            if key is not None:
                service.conversations.forget(who.user_id, key)
            with contextlib.suppress(Exception):
                await service.sessions.close(session_id, "its first run was refused")
        raise
    render = ChatRender(service.storage, who, row.id, str(request.base_url), service.secrets.keys)
    chat = _Chat(caller, row.id, body.model, render, earlier, question, session_id, key)
    if body.stream:
        return StreamingResponse(
            chat.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await chat.complete(request)


def _conversation_key(body: ChatRequest, header: str | None, earlier: list[Turn]) -> str | None:
    """The conversation's key (see the module docstring for the order); None: a new conversation."""
    meta = (body.metadata or {}).get("conversation_id")
    if meta is not None and not (isinstance(meta, str) and 0 < len(meta) <= 256):  # never cut: ids collide
        raise ApiError(
            400,
            "invalid_request",
            f"metadata.conversation_id must be a string of 1 to 256 characters, not {type(meta).__name__} "
            f"{str(meta)[:40]!r}",
            param="metadata.conversation_id",
        )
    if body.user:
        return f"user:{body.user}"
    if isinstance(meta, str) and meta:
        return f"meta:{meta}"
    if header:
        return f"header:{header}"
    return history_hash(earlier) if earlier else None


async def _session_for(caller: CallerInfo, key: str | None, earlier: list[Turn]) -> tuple[str, bool]:
    """The conversation's live session (False), or a new one with the earlier turns as context (True)."""
    service, who = caller.service, caller.principal
    if key is not None and (known := service.conversations.session_for(who.user_id, key)) is not None:
        try:
            await service.sessions.get(who, known)
            return known, False
        except ApiError as exc:
            if exc.status not in (404, 410):  # closed or expired: a new session goes on
                raise
            service.conversations.forget(who.user_id, key)
    live = await service.sessions.create(who, "run")
    if earlier:
        files = await live.session.list_files()
        form = service.settings.agent.reply_format
        live.history[:] = [
            {
                "role": "system",
                "content": system_prompt(
                    files, reply_format=form, network=service.sessions.egress is not None
                ),
            },
            *context_messages(earlier, form),
        ]
    if key is not None:
        service.conversations.remember(who.user_id, key, live.id)
    return live.id, True


class _Chat:
    """One completion: follows the run's events and answers in OpenAI's shapes."""

    def __init__(
        self,
        caller: CallerInfo,
        run_id: str,
        model: str,
        render: ChatRender,
        earlier: list[Turn],
        question: str,
        session_id: str,
        key: str | None,
    ) -> None:
        self.caller, self.service, self.owner = caller, caller.service, caller.principal
        self.run_id, self.model, self.revoked = run_id, model, False
        self.render, self.earlier, self.question = render, earlier, question
        self.session_id, self.key = session_id, key
        self.id, self.created = f"chatcmpl-{run_id}", int(time.time())

    async def _events(self) -> AsyncIterator[tuple[str, str]]:
        async for record in self.service.journal.follow(self.run_id):
            if not await still_authorised(self.caller):  # revoked since the request came: nothing more
                self.revoked = True
                self._cancel("its API key was revoked")
                return
            yield await self.render.feed(parse_event(record.data))
        self._remember()

    def _remember(self) -> None:
        """Register the conversation so far under its hash: the next turn's earlier messages."""
        if self.render.finish_reason is None or (self.key is not None and not self.key.startswith("hash:")):
            return
        turns = [*self.earlier, Turn("user", self.question), Turn("assistant", self.render.content)]
        self.service.conversations.remember(self.owner.user_id, history_hash(turns), self.session_id)

    def _failure(self) -> ApiError:
        error = self.render.error
        if error is None:
            return ApiError(500, "run_failed", f"run {self.run_id} ended without an answer")
        return ApiError(503 if error.retryable else 500, error.code, f"the run failed: {error.message}")

    async def complete(self, request: Request) -> ChatCompletion | JSONResponse:
        watch = asyncio.ensure_future(self._cancel_when_gone(request))
        try:
            async for _ in self._events():
                pass
        finally:
            watch.cancel()
        if self.revoked:
            raise ApiError(401, "unauthorized", REVOKED)
        render = self.render
        if render.finish_reason is None:  # OpenAI's SDKs retry a 5xx unless told not to: the run would rerun
            exc = self._failure()
            headers = None if exc.status == 503 else {"x-should-retry": "false"}
            return JSONResponse(openai_error(exc.status, exc.code, exc.message), exc.status, headers=headers)
        message = AssistantMessage(content=render.content, reasoning_content=render.reasoning_text.strip())
        choice = Choice(message=message, finish_reason=render.finish_reason)
        return ChatCompletion(
            id=self.id, created=self.created, model=self.model, choices=[choice], usage=render.usage()
        )

    async def _cancel_when_gone(self, request: Request) -> None:
        """Cancel the run when the client goes away (e.g. its timeout): else its SDK's retries would start
        the same run again beside it, each running to its end for no one."""
        while (await request.receive())["type"] != "http.disconnect":  # the body is read: only this comes
            pass
        self._cancel()

    def _cancel(self, why: str = "the chat client went away before the answer") -> None:
        self.service.conversations.spawn(self.service.runs.cancel(self.owner, self.run_id, why))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, usage: bool = False) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            data["usage"] = self.render.usage().model_dump()
        return frame(json.dumps(data, ensure_ascii=False))

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            async for item in _keepalive(self._events()):
                if item is None:
                    yield b": keep-alive\n\n"
                    continue
                reasoning, content = item
                if reasoning:
                    yield self._chunk({"reasoning_content": reasoning})
                if content:
                    yield self._chunk({"content": content})
            if self.revoked:
                yield frame(json.dumps(openai_error(401, "unauthorized", REVOKED)))
                return
            if self.render.finish_reason is None:
                exc = self._failure()
                body = openai_error(exc.status, exc.code, exc.message)
                yield frame(json.dumps(body))
            else:
                yield self._chunk({}, self.render.finish_reason, usage=True)
            yield frame("[DONE]")
        finally:
            if not self.render.finished and not self.revoked:  # the client went away: stop its run
                self._cancel()


async def _keepalive(items: AsyncIterator[tuple[str, str]]) -> AsyncIterator[tuple[str, str] | None]:
    """``items``, with None every KEEPALIVE_S while none comes (proxies close quiet streams)."""
    pending: asyncio.Future[tuple[str, str]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


@router.get("/images/{run_id}/{name}", responses={200: {"content": {"image/png": {}}}})
async def get_image(
    run_id: Annotated[str, Path(max_length=64, pattern=r"^r_[0-9a-f]+$")],
    name: Annotated[str, Path(max_length=50, pattern=_IMAGE_NAME)],
    request: Request,
) -> Response:
    """An image a completion linked; no key: the unguessable name is the capability (see openai_render)."""
    service: Service = request.app.state.service
    owner = await asyncio.to_thread(_run_owner, service, run_id)
    if owner is None:
        raise ApiError(404, "not_found", _NO_IMAGE)
    tenant, user = owner
    path = f"{IMAGE_DIR}/{run_id}/{name}"
    try:
        handle = await asyncio.to_thread(service.storage.read, tenant, user, "user", path)
    except StorageError:
        raise ApiError(404, "not_found", _NO_IMAGE) from None
    with handle:
        data = await asyncio.to_thread(handle.read)
    if not image_is_ours(service.secrets.keys, run_id, name, data):  # written by code, not by the service
        raise ApiError(404, "not_found", _NO_IMAGE)
    mime = next(m for m, ext in IMAGE_TYPES.items() if name.endswith("." + ext))
    headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=mime, headers=headers)


def _run_owner(service: Service, run_id: str) -> tuple[str, str] | None:
    query = (
        select(Tenant.name, User.name)
        .join(User, User.tenant_id == Tenant.id)
        .join(Run, Run.user_id == User.id)
        .where(Run.id == run_id)
    )
    with service.db.session() as s:
        row = s.execute(query).first()
    return (row[0], row[1]) if row is not None else None
