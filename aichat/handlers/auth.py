"""/api/auth: register, login, me, password."""

from __future__ import annotations

from aiohttp import web

from aichat.handlers.audit import address, record
from aichat.http.access import public
from aichat.http.errors import ApiError, ok
from aichat.http.appkeys import (config_key, db_key, hasher_key, limiter_key, tokens_key,
                                 trusted_proxies_key, user_key)
from aichat.security.ratelimit import Attempt, CredentialError
from aichat.settings import system as system_settings
from aichat.settings.config import Config
from aichat.store import api_keys, audit, users
from aichat.store.db import Reader
from aichat.store.users import User
from aichat.http.bodies import CREDENTIALS, PASSWORD_CHANGE, REGISTRATION
from aichat.http.validate import read_json

routes = web.RouteTableDef()

USERNAME_TAKEN = "Username already exists"


async def _registration_role(db: Reader, config: Config) -> str:
    """ADMIN for the very first account; otherwise USER if this mode lets people register
    (registration_enabled as GET /api/settings/system resolves it)."""
    if await users.count(db) == 0:
        return "ADMIN"
    if config.app_mode == "single":
        raise ApiError(403, "Registration is disabled in single user mode")
    if not (await system_settings.load(db, config))["registration_enabled"]:
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
        await attempt.named(body.get("username"))
        fields = REGISTRATION.parse(body)
        username, password = fields["username"], fields["password"]
        # Cheap refusals before paying for bcrypt; repeated under the write lock below.
        await _registration_role(db, config)
        if await users.exists(db, username):
            raise CredentialError(409, USERNAME_TAKEN)
        hashed = await request.app[hasher_key].hash(password)
        async with db.transaction() as tx:
            role = await _registration_role(tx, config)
            if await users.exists(tx, username):
                raise CredentialError(409, USERNAME_TAKEN)
            user = await users.create(tx, username, hashed, role)
            await record(tx, request, "register", f"user:{user.id}",
                         {"username": username, "role": role}, user=user)
    return ok(_session(request, user), "Registration successful")


@routes.post("/api/auth/login")
@public
async def login(request: web.Request) -> web.Response:
    db = request.app[db_key]
    async with _attempt(request) as attempt:
        body = await read_json(request, request.app[config_key].max_json_body)
        await attempt.named(body.get("username"))
        fields = CREDENTIALS.parse(body)
        found = await users.get_with_hash(db, fields["username"])
        user, hashed = found if found else (None, None)
        if not await request.app[hasher_key].verify(fields["password"], hashed) or user is None:
            # Its own commit: nothing else is written. The name as typed, never the password.
            async with db.transaction() as tx:
                await audit.add(tx, audit.Actor("anonymous", address=address(request)),
                                "login_failed", fields["username"],
                                {"reason": "unknown_user" if user is None else "wrong_password"})
            raise CredentialError(401, "Invalid username or password")
    async with db.transaction() as tx:
        await record(tx, request, "login", f"user:{user.id}", {"username": user.username},
                     user=user)
    return ok(_session(request, user), "Login successful")


@routes.get("/api/auth/me")
async def me(request: web.Request) -> web.Response:
    user = request[user_key]
    return ok({**user.public(), "createdAt": user.created_at})


@routes.put("/api/auth/password")
async def change_password(request: web.Request) -> web.Response:
    db, hasher, user = request.app[db_key], request.app[hasher_key], request[user_key]
    body = await read_json(request, request.app[config_key].max_json_body)
    fields = PASSWORD_CHANGE.parse(body)
    # A stolen token must not let its holder guess the password it would need to keep access.
    async with _attempt(request) as attempt:
        await attempt.named(user.username)
        if not await hasher.verify(fields["currentPassword"], await users.get_hash(db, user.id)):
            raise CredentialError(400, "Current password is incorrect")
    hashed = await hasher.hash(fields["newPassword"])
    # A stolen token could have minted API keys that never expire: they go with the password.
    async with db.transaction() as tx:
        await users.set_password(tx, user.id, hashed)
        revoked = await api_keys.delete_for_user(tx, user.id)
        await record(tx, request, "password_change", f"user:{user.id}",
                     {"username": user.username, "apiKeysRevoked": revoked})
    keys = f"; {revoked} API key{'s' if revoked != 1 else ''} revoked" if revoked else ""
    return ok(None, f"Password changed; sign in again with the new password{keys}")
