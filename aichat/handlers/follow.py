"""GET /api/chat/sessions/:id/stream: follow the round running on a session, from where the
caller's copy ends (docs/api.md §5.9)."""

from __future__ import annotations

from aiohttp import web

from aichat.chat import service
from aichat.chat.broadcast import MAX_FOLLOWERS, Broadcast
from aichat.chat.registry import RETRY_AFTER_S, decrement
from aichat.chat.tail import Tail, resume_point
from aichat.http.appkeys import config_key, db_key, registry_key, user_key
from aichat.http.errors import ApiError, not_found
from aichat.http.validate import path_id
from aichat.sse import SSEWriter
from aichat.store import messages, sessions, usage

routes = web.RouteTableDef()

_SEQ_DIGITS = 11  # a sequence number's longest form: a round never reaches 10^11 events


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _SEQ_DIGITS else None


def _query_after(request: web.Request) -> int | None:
    raw = request.query.get("after", "")
    if raw == "":
        return None
    after = _number(raw)
    if after is None:
        raise ApiError(400, "after must be a non-negative integer (an event's sequence number)")
    return after


def _last_event(request: web.Request, broadcast: Broadcast) -> int | None:
    """`Last-Event-ID: <generation>:<n>` of this round; one of another round names nothing."""
    generation, _, seq = request.headers.get("Last-Event-ID", "").partition(":")
    return _number(seq) if generation == broadcast.generation else None


@routes.get("/api/chat/sessions/{sessionId}/stream")
async def follow(request: web.Request) -> web.StreamResponse:
    app = request.app
    session_id = path_id(request, "sessionId", "session")
    after = _query_after(request)
    if await sessions.owned(app[db_key], session_id, request[user_key].id) is None:
        raise not_found("Chat session")
    registry = app[registry_key]
    round_ = registry.running(session_id)
    if round_ is None or round_.broadcast is None or not round_.running:
        if registry.cluster is not None:  # it may run on another instance
            return await _follow_elsewhere(request, session_id)
        return web.Response(status=204)  # nothing generating here: the history is complete
    broadcast = round_.broadcast
    if len(broadcast.followers) >= MAX_FOLLOWERS:
        raise ApiError(429, f"At most {MAX_FOLLOWERS} clients may follow one reply",
                       {"Retry-After": RETRY_AFTER_S})
    last = _last_event(request, broadcast)
    writer = SSEWriter(request, round_.settings.heartbeat_s)
    try:
        await writer.start()
    except (ConnectionError, RuntimeError):
        return web.Response(status=499)
    try:
        # Attached and caught up in one step; from then on the round writes to it live.
        await writer.write(broadcast.follow(writer, last if last is not None else after))
        await round_.done.wait()
    finally:
        broadcast.unfollow(writer)
        await writer.close()
    return writer.response


async def _follow_elsewhere(request: web.Request, session_id: int) -> web.StreamResponse:
    """Through the checkpoints of the instance that runs the round (chat/tail.py)."""
    app = request.app
    db, registry = app[db_key], app[registry_key]
    usage_before = await usage.newest_id(db, session_id)  # before its round can end
    reply_id = await messages.streaming_reply(db, session_id)
    if reply_id is None:
        return web.Response(status=204)
    if registry.tails.get(session_id, 0) >= MAX_FOLLOWERS:
        raise ApiError(429, f"At most {MAX_FOLLOWERS} clients may follow one reply",
                       {"Retry-After": RETRY_AFTER_S})
    registry.tails[session_id] = registry.tails.get(session_id, 0) + 1  # before any wait
    try:
        settings = await service.stream_settings(app)
        writer = SSEWriter(request, settings.heartbeat_s)
        try:
            await writer.start()
        except (ConnectionError, RuntimeError):
            return web.Response(status=499)
        try:
            await Tail(db, writer, session_id, reply_id,
                       interval_s=app[config_key].checkpoint_interval_ms / 1000,
                       usage_emit=settings.usage_emit,
                       ).run(resume_point(request.headers.get("Last-Event-ID", "")),
                             usage_before)
        finally:
            await writer.close()
        return writer.response
    finally:
        decrement(registry.tails, session_id)
