"""/api/keys: personal API keys for the OpenAI-compatible /v1 surface (JWT only here, so a
leaked key cannot mint more keys or manage the account)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from aiohttp import web

from aichat.handlers.audit import record
from aichat.security.credentials import KEY_PREFIX, hash_key
from aichat.http.errors import ApiError, not_found, ok
from aichat.http.appkeys import config_key, db_key, user_key
from aichat.store import api_keys
from aichat.timeutil import iso
from aichat.http.bodies import API_KEY_CREATE
from aichat.http.validate import path_id, read_json
from aichat.handlers.usage import date_range

routes = web.RouteTableDef()

MAX_KEYS = 50
PREFIX_CHARS = len(KEY_PREFIX) + 8  # shown in lists so a user can tell keys apart


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


@routes.post("/api/keys")
async def create_key(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    body = await read_json(request, request.app[config_key].max_json_body)
    fields = API_KEY_CREATE.parse(body)
    name, days = fields["name"], fields["expiresInDays"]
    expires = iso(datetime.now(UTC) + timedelta(days=days)) if days else None
    key = new_key()
    async with db.transaction() as tx:
        if await api_keys.count(tx, user.id) >= MAX_KEYS:
            raise ApiError(400, f"At most {MAX_KEYS} API keys per user; revoke one first")
        row = await api_keys.create(tx, user.id, name, key[:PREFIX_CHARS], hash_key(key),
                                   expires, fields["tokensPerMonth"])
        # The key's name and terms only: never the key, its prefix or its hash.
        await record(tx, request, "api_key_create", f"api_key:{row['id']}",
                     {"name": name, "expiresAt": expires,
                      "tokensPerMonth": fields["tokensPerMonth"]})
    return ok({**row, "key": key}, "API key created: copy it now, it is not shown again")


@routes.get("/api/keys")
async def list_keys(request: web.Request) -> web.Response:
    return ok(await api_keys.list_for(request.app[db_key], request[user_key].id))


@routes.delete("/api/keys/{id}")
async def revoke_key(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    key_id = path_id(request, "id", "API key")
    async with db.transaction() as tx:
        # The name, for the audit log: the row is gone once deleted.
        name = next((k["name"] for k in await api_keys.list_for(tx, user.id)
                     if k["id"] == key_id), None)
        if name is None or not await api_keys.delete(tx, key_id, user.id):
            raise not_found("API key")
        await record(tx, request, "api_key_revoke", f"api_key:{key_id}", {"name": name})
    return ok(None, "API key revoked")


@routes.get("/api/keys/usage")
async def key_usage(request: web.Request) -> web.Response:
    start, end = date_range(request)
    rows = await api_keys.daily_usage(request.app[db_key], request[user_key].id, start, end)
    return ok({"from": start, "to": end, "rows": rows})
