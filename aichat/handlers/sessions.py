"""/api/sessions: a user's chats. Another user's session is simply "not found"."""

from __future__ import annotations

from aiohttp import web

from aichat.chat import live
from aichat.chat.outcome import CancelReason
from aichat.http.errors import not_found, ok
from aichat.http.appkeys import config_key, db_key, registry_key, user_key
from aichat.store import messages, models, sessions
from aichat.http.bodies import MESSAGES_PAGE, SESSION_CREATE, SESSION_RENAME, SESSIONS_PAGE
from aichat.http.validate import pagination, path_id, read_json

routes = web.RouteTableDef()

NOT_FOUND = "Chat session"


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    page, limit = SESSIONS_PAGE.read(request)
    rows, total = await sessions.list_page(request.app[db_key].quick, request[user_key].id,
                                           page, limit)
    return ok({"sessions": rows, "pagination": pagination(page, limit, total)})


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    body = await read_json(request, request.app[config_key].max_json_body)
    fields = SESSION_CREATE.parse(body)
    model_id = fields["modelConfigId"]
    async with db.transaction() as tx:
        if await models.get_visible(tx, model_id, user.id) is None:
            raise not_found("Model configuration")
        session_id = await sessions.create(tx, user.id, model_id, fields["title"])
    return ok(await sessions.summary(db, session_id, user.id), "Chat session created")


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    row = await sessions.summary(db, path_id(request, "id", "session"), user.id)
    if row is None:
        raise not_found(NOT_FOUND)
    row["messages"] = await messages.list_all(db, row["id"])
    await live.fill_streaming(request.app, row["messages"])
    return ok(row)


@routes.put("/api/sessions/{id}")
async def rename_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    session_id = path_id(request, "id", "session")
    body = await read_json(request, request.app[config_key].max_json_body)
    title = SESSION_RENAME.parse(body)["title"]
    async with db.transaction() as tx:
        if not await sessions.rename(tx, session_id, user.id, title):
            raise not_found(NOT_FOUND)
    return ok(await sessions.summary(db, session_id, user.id), "Chat session updated")


async def _stop_round_of(request: web.Request, reason: CancelReason) -> tuple[int, int]:
    """(session id, user id) of an owned session whose running round has been stopped, saving
    nothing: what it would save is about to be deleted."""
    user_id = request[user_key].id
    session_id = path_id(request, "id", "session")
    if await sessions.owned(request.app[db_key], session_id, user_id) is None:
        raise not_found(NOT_FOUND)
    await request.app[registry_key].cancel_session(session_id, reason, discard=True)
    return session_id, user_id


@routes.delete("/api/sessions/{id}")
async def delete_session(request: web.Request) -> web.Response:
    session_id, user_id = await _stop_round_of(request, CancelReason.DELETED)
    async with request.app[db_key].transaction() as tx:
        if not await sessions.delete(tx, session_id, user_id):
            raise not_found(NOT_FOUND)
    return ok(None, "Chat session deleted")


@routes.delete("/api/sessions/{id}/messages")
async def clear_messages(request: web.Request) -> web.Response:
    session_id, user_id = await _stop_round_of(request, CancelReason.CLEARED)
    async with request.app[db_key].transaction() as tx:
        if await sessions.owned(tx, session_id, user_id) is None:
            raise not_found(NOT_FOUND)
        await messages.delete_for_session(tx, session_id)
    return ok(None, "Messages cleared")


@routes.get("/api/chat/sessions/{sessionId}/messages")
async def list_messages(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    session_id = path_id(request, "sessionId", "session")
    page, limit = MESSAGES_PAGE.read(request)
    if await sessions.owned(db, session_id, user.id) is None:
        raise not_found(NOT_FOUND)
    rows, total = await messages.list_page(db, session_id, page, limit)
    await live.fill_streaming(request.app, rows)
    return ok({"messages": rows, "pagination": pagination(page, limit, total)})
