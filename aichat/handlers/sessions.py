"""/api/sessions: a user's chats. Another user's session is simply "not found"."""

from __future__ import annotations

from aiohttp import web

from aichat.http.errors import not_found, ok
from aichat.http.appkeys import config_key, db_key, registry_key, user_key
from aichat.store import messages, models, sessions
from aichat.http.validate import body_id, pagination, paging, path_id, read_json, string

routes = web.RouteTableDef()

NOT_FOUND = "Chat session"


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    page, limit = paging(request, default_limit=20, max_limit=100)
    rows, total = await sessions.list_page(request.app[db_key].quick, request[user_key].id,
                                           page, limit)
    return ok({"sessions": rows, "pagination": pagination(page, limit, total)})


@routes.post("/api/sessions")
async def create_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    body = await read_json(request, request.app[config_key].max_json_body)
    model_id = body_id(body, "modelConfigId")
    title = string(body, "title", required=False, max_len=200) or "New Chat"
    async with db.transaction() as tx:
        if await models.get_visible(tx, model_id, user.id) is None:
            raise not_found("Model configuration")
        session_id = await sessions.create(tx, user.id, model_id, title)
    return ok(await sessions.summary(db, session_id, user.id), "Chat session created")


@routes.get("/api/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    row = await sessions.summary(db, path_id(request, "id", "session"), user.id)
    if row is None:
        raise not_found(NOT_FOUND)
    row["messages"] = await messages.list_all(db, row["id"])
    return ok(row)


@routes.put("/api/sessions/{id}")
async def rename_session(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    session_id = path_id(request, "id", "session")
    title = string(await read_json(request, request.app[config_key].max_json_body), "title",
                   max_len=200)
    async with db.transaction() as tx:
        if not await sessions.rename(tx, session_id, user.id, title):
            raise not_found(NOT_FOUND)
    return ok(await sessions.summary(db, session_id, user.id), "Chat session updated")


async def _stop_round_of(request: web.Request, reason: str) -> tuple[int, int]:
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
    session_id, user_id = await _stop_round_of(request, "deleted")
    async with request.app[db_key].transaction() as tx:
        if not await sessions.delete(tx, session_id, user_id):
            raise not_found(NOT_FOUND)
    return ok(None, "Chat session deleted")


@routes.delete("/api/sessions/{id}/messages")
async def clear_messages(request: web.Request) -> web.Response:
    session_id, user_id = await _stop_round_of(request, "cleared")
    async with request.app[db_key].transaction() as tx:
        if await sessions.owned(tx, session_id, user_id) is None:
            raise not_found(NOT_FOUND)
        await messages.delete_for_session(tx, session_id)
    return ok(None, "Messages cleared")


@routes.get("/api/chat/sessions/{sessionId}/messages")
async def list_messages(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    session_id = path_id(request, "sessionId", "session")
    page, limit = paging(request, default_limit=1000, max_limit=1000)
    if await sessions.owned(db, session_id, user.id) is None:
        raise not_found(NOT_FOUND)
    rows, total = await messages.list_page(db, session_id, page, limit)
    return ok({"messages": rows, "pagination": pagination(page, limit, total)})
