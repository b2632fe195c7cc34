"""/api/users: admin-only account management."""

from __future__ import annotations

from aiohttp import web

from aichat.handlers.audit import record
from aichat.http.access import admin_only
from aichat.http.errors import ApiError, not_found, ok
from aichat.http.appkeys import config_key, db_key, registry_key, user_key
from aichat.store import users
from aichat.store.db import Transaction
from aichat.http.bodies import ROLE_CHANGE, USERS_PAGE
from aichat.http.validate import pagination, path_id, read_json

routes = web.RouteTableDef()


async def _caller_still_admin(tx: Transaction, caller_id: int) -> None:
    """Two admins acting on each other at once: the second to commit finds it is no longer
    an admin (or no longer exists) and is refused, so the last-admin rule cannot be raced."""
    caller = await users.get(tx, caller_id)
    if caller is None or not caller.is_admin:
        raise ApiError(403, "Admin access required")


@routes.get("/api/users")
@admin_only
async def list_users(request: web.Request) -> web.Response:
    page, limit = USERS_PAGE.read(request)
    search = request.query.get("search", "").strip() or None
    rows, total = await users.list_page(request.app[db_key], page, limit, search)
    return ok({"users": rows, "pagination": pagination(page, limit, total)})


@routes.get("/api/users/{id}")
@admin_only
async def get_user(request: web.Request) -> web.Response:
    row = await users.get_admin_view(request.app[db_key], path_id(request, "id", "user"))
    if row is None:
        raise not_found("User")
    return ok(row)


@routes.put("/api/users/{id}/role")
@admin_only
async def set_user_role(request: web.Request) -> web.Response:
    db = request.app[db_key]
    user_id = path_id(request, "id", "user")
    body = await read_json(request, request.app[config_key].max_json_body)
    role = ROLE_CHANGE.parse(body)["role"]
    if user_id == request[user_key].id:
        raise ApiError(400, "Cannot modify your own role")
    async with db.transaction() as tx:
        await _caller_still_admin(tx, request[user_key].id)
        target = await users.get(tx, user_id)
        if target is None:
            raise not_found("User")
        if target.is_admin and role == "USER" and await users.admin_count(tx) <= 1:
            raise ApiError(400, "At least one admin is required")
        await users.set_role(tx, user_id, role)
        await record(tx, request, "role_change", f"user:{user_id}",
                     {"username": target.username, "from": target.role, "to": role})
    return ok(await users.get_public(db, user_id), "Role updated")


@routes.delete("/api/users/{id}")
@admin_only
async def delete_user(request: web.Request) -> web.Response:
    db = request.app[db_key]
    user_id = path_id(request, "id", "user")
    if user_id == request[user_key].id:
        raise ApiError(400, "Cannot delete your own account")
    target = await users.get(db, user_id)
    if target is None:
        raise not_found("User")
    if target.is_admin and await users.admin_count(db) <= 1:
        raise ApiError(400, "At least one admin is required")
    # Their running rounds stop first, saving nothing, so no reply lands in a deleted session.
    await request.app[registry_key].cancel_user(user_id)
    async with db.transaction() as tx:
        await _caller_still_admin(tx, request[user_key].id)
        target = await users.get(tx, user_id)
        if target is None:
            raise not_found("User")
        if target.is_admin and await users.admin_count(tx) <= 1:
            raise ApiError(400, "At least one admin is required")
        await users.delete(tx, user_id)
        await record(tx, request, "user_delete", f"user:{user_id}",
                     {"username": target.username, "role": target.role})
    return ok(None, "User deleted")
