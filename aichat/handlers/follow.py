"""GET /api/chat/sessions/:id/stream: follow the round running on a session, from where the
caller's copy ends (docs/api.md §5.9)."""

from __future__ import annotations

from aiohttp import web

from aichat.chat.broadcast import MAX_FOLLOWERS, Broadcast
from aichat.chat.registry import RETRY_AFTER_S
from aichat.http.appkeys import db_key, registry_key, user_key
from aichat.http.errors import ApiError, not_found
from aichat.http.validate import path_id
from aichat.sse import SSEWriter
from aichat.store import sessions

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
    round_ = app[registry_key].running(session_id)
    if round_ is None or round_.broadcast is None or not round_.running:
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
