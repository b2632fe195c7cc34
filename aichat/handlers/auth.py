"""/api/auth: register, login, me, password."""

from __future__ import annotations

from aiohttp import web

from aichat.security.accounts import valid_password, valid_username
from aichat.http.access import public
from aichat.http.errors import ApiError, ok
from aichat.http.appkeys import (config_key, db_key, hasher_key, limiter_key, tokens_key,
                                 trusted_proxies_key, user_key)
from aichat.security.ratelimit import Attempt
from aichat.store import settings as settings_store
from aichat.store import users
from aichat.store.db import Reader
from aichat.store.users import User
from aichat.http.validate import read_json, string

routes = web.RouteTableDef()


async def _registration_role(db: Reader, app_mode: str) -> str:
    """ADMIN for the very first account; otherwise USER if this mode lets people register."""
    if await users.count(db) == 0:
        return "ADMIN"
    if app_mode == "single":
        raise ApiError(403, "Registration is disabled in single user mode")
    stored = await settings_store.system_values(db)
    if stored.get("registration_enabled", "true").strip().lower() != "true":
        raise ApiError(403, "Registration is currently disabled")
    return "USER"


def _session(request: web.Request, user: User) -> dict:
    token = request.app[tokens_key].issue(user.id, user.username, user.role, user.token_version)
    return {"user": user.public(), "token": token}


def _attempt(request: web.Request) -> Attempt:
    return Attempt(request.app[limiter_key], request, request.app[trusted_proxies_key])


@routes.post("/api/auth/register")
@public
async def register(request: web.Request) -> web.Response:
    config, db = request.app[config_key], request.app[db_key]
    async with _attempt(request) as attempt:
        body = await read_json(request, config.max_json_body)
        attempt.named(body.get("username"))
        username = valid_username(body.get("username"))
        password = valid_password(body.get("password"))
        # Cheap refusals before paying for bcrypt; repeated under the write lock below.
        await _registration_role(db, config.app_mode)
        if await users.exists(db, username):
            raise ApiError(409, "Username already exists")
        hashed = await request.app[hasher_key].hash(password)
        async with db.transaction() as tx:
            role = await _registration_role(tx, config.app_mode)
            if await users.exists(tx, username):
                raise ApiError(409, "Username already exists")
            user = await users.create(tx, username, hashed, role)
    return ok(_session(request, user), "Registration successful")


@routes.post("/api/auth/login")
@public
async def login(request: web.Request) -> web.Response:
    async with _attempt(request) as attempt:
        body = await read_json(request, request.app[config_key].max_json_body)
        attempt.named(body.get("username"))
        username = string(body, "username", min_len=0, blank_ok=True)
        password = string(body, "password", min_len=0, blank_ok=True)
        found = await users.get_with_hash(request.app[db_key], username)
        user, hashed = found if found else (None, None)
        if not await request.app[hasher_key].verify(password, hashed) or user is None:
            raise ApiError(401, "Invalid username or password")
    return ok(_session(request, user), "Login successful")


@routes.get("/api/auth/me")
async def me(request: web.Request) -> web.Response:
    user = request[user_key]
    return ok({**user.public(), "createdAt": user.created_at})


@routes.put("/api/auth/password")
async def change_password(request: web.Request) -> web.Response:
    db, hasher, user = request.app[db_key], request.app[hasher_key], request[user_key]
    body = await read_json(request, request.app[config_key].max_json_body)
    current = string(body, "currentPassword", min_len=0, blank_ok=True)
    new = valid_password(body.get("newPassword"),
                         "newPassword must be at least 8 characters with letters and numbers")
    if not await hasher.verify(current, await users.get_hash(db, user.id)):
        raise ApiError(400, "Current password is incorrect")
    hashed = await hasher.hash(new)
    async with db.transaction() as tx:
        await users.set_password(tx, user.id, hashed)
    return ok(None, "Password changed; sign in again with the new password")
