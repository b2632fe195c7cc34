"""/api/chat: stream, completion, stop and regenerate (docs/api.md §5, §6.1-6.3)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import web

from aichat.chat import relay, service
from aichat.chat.outcome import CancelReason, raise_failure
from aichat.chat.registry import GUARD_REASONS, PERSIST_WAIT_S
from aichat.chat.reply import stored_numbers
from aichat.chat.request import parse_chat, parse_regenerate
from aichat.chat.round import Round
from aichat.http.appkeys import config_key, db_key, registry_key, user_key
from aichat.http.errors import not_found, ok
from aichat.http.validate import body_id, read_json
from aichat.store import messages, sessions, usage
from aichat.store.db import Reader

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, Any]:
    return await read_json(request, request.app[config_key].max_chat_body)


@asynccontextmanager
async def _setting_up(app: web.Application, prepared: service.Prepared) -> AsyncIterator[None]:
    """The user's concurrency cap (429 before anything is stored), then the session's turn;
    the quotas are checked as the round opens (chat/service.py `open_round`)."""
    registry, limit = app[registry_key], prepared.limits.max_streams
    refusal = (f"Too many chats are generating at once (limit {limit}); stop one or wait for "
               "it to finish")
    async with registry.booked(prepared.user.id, limit, refusal, prepared.session_id), \
            registry.reserve(prepared.session_id):
        try:
            yield
        finally:
            if not prepared.hold.owned:  # admitted, but no round started
                await prepared.hold.release()
                if prepared.reply_id is not None:
                    await app[db_key].run(messages.remove, prepared.reply_id)


async def _stream(request: web.Request, prepared: service.Prepared) -> web.StreamResponse:
    app = request.app
    async with _setting_up(app, prepared):
        round_ = await service.open_round(app, prepared, streamed=True)
        writer = await relay.begin(request, round_)
    if writer is None:  # the client left before the headers went out
        return web.Response(status=499)
    return await relay.finish(round_, writer)


@routes.post("/api/chat/stream")
async def stream_chat(request: web.Request) -> web.StreamResponse:
    chat = await parse_chat(await _body(request))
    prepared = await service.check_chat(request.app, request[user_key], chat)
    return await _stream(request, prepared)


@routes.post("/api/chat/regenerate")
async def regenerate(request: web.Request) -> web.StreamResponse:
    regen = parse_regenerate(await _body(request))
    prepared = await service.check_regenerate(request.app, request[user_key], regen)
    return await _stream(request, prepared)


async def _reply(request: web.Request, round_: Round) -> dict[str, Any]:
    message = (await messages.get(request.app[db_key], round_.assistant_message_id)
               if round_.assistant_message_id is not None else None)
    return {"content": round_.saved_text, "usage": round_.final_usage,
            "userMessageId": round_.user_message_id, "assistantMessage": message}


async def _guard_elsewhere(app: web.Application, session_id: int,
                           content: str) -> dict[str, Any] | None:
    """The post-abort guard when the stream ran on another instance (chat/cluster.py): stop
    it if it still runs (a new message would anyway), then take its ending if this message
    re-sends it."""
    cluster = app[registry_key].cluster
    if cluster is None:
        return None
    await cluster.stop_elsewhere(session_id, CancelReason.STOP, timeout=PERSIST_WAIT_S)
    taken = await cluster.take_guard(session_id, content, GUARD_REASONS)
    if taken is None:
        return None
    db, reply_id = app[db_key], taken["assistant_message_id"]
    message = await messages.get(db, reply_id) if reply_id is not None else None
    return {"content": message["content"] if message else "",
            "usage": await _round_usage(db, session_id),
            "userMessageId": taken["user_message_id"], "assistantMessage": message}


async def _round_usage(db: Reader, session_id: int) -> dict[str, int] | None:
    """The usage of the session's latest round as the round itself reports it (§5.7)."""
    row = await usage.last_round(db, session_id)
    return stored_numbers(row) if row is not None else None


@routes.post("/api/chat/completion")
async def complete_chat(request: web.Request) -> web.Response:
    app = request.app
    chat = await parse_chat(await _body(request))
    prepared = await service.check_chat(app, request[user_key], chat)
    aborted = app[registry_key].guard_candidate(chat.session_id, chat.content)
    if aborted is not None:
        # The front end's stop button: it aborted the stream and re-sent the same message.
        aborted.guard_used = True
        aborted.cancel(CancelReason.STOP)
        await aborted.wait_done(PERSIST_WAIT_S)
        cluster = app[registry_key].cluster
        if cluster is not None:  # used here: no other instance may serve it again
            await cluster.take_guard(chat.session_id, chat.content, GUARD_REASONS)
        return ok(await _reply(request, aborted))
    duplicate = await _guard_elsewhere(app, chat.session_id, chat.content)
    if duplicate is not None:
        return ok(duplicate)
    async with _setting_up(app, prepared):
        round_ = await service.open_round(app, prepared, streamed=False)
        round_.start()
    await round_.follow(PERSIST_WAIT_S)
    raise_failure(round_.outcome, bare_upstream_status=True)
    return ok(await _reply(request, round_))


@routes.post("/api/chat/stop")
async def stop_chat(request: web.Request) -> web.Response:
    db, user, registry = request.app[db_key], request[user_key], request.app[registry_key]
    session_id = body_id(await read_json(request, request.app[config_key].max_json_body),
                         "sessionId")
    if await sessions.owned(db, session_id, user.id) is None:
        raise not_found("Chat session")
    round_ = registry.running(session_id)
    if round_ is None:
        if registry.cluster is not None:  # it may run on another instance
            stopped, reply_id = await registry.cluster.stop_elsewhere(
                session_id, CancelReason.STOP, timeout=PERSIST_WAIT_S)
            if stopped:
                return ok({"stopped": True, "assistantMessageId": reply_id})
        return ok({"stopped": False})
    round_.cancel(CancelReason.STOP)
    await round_.wait_done(PERSIST_WAIT_S)
    return ok({"stopped": True, "assistantMessageId": round_.assistant_message_id})
