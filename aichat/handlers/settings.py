"""/api/settings: system (read by all, written by admins) and personal settings."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aichat.handlers.audit import record
from aichat.settings import system as settings
from aichat.http.access import admin_only
from aichat.settings.config import Config
from aichat.http.errors import ok
from aichat.http.appkeys import config_key, db_key, user_key
from aichat.store import settings as store
from aichat.store.db import Reader
from aichat.http.bodies import PERSONAL_SETTINGS, SYSTEM_SETTINGS
from aichat.http.validate import read_json

routes = web.RouteTableDef()


async def _system_view(db: Reader, config: Config) -> dict[str, Any]:
    """The run-time values, the start-time pair, and where each run-time value comes from."""
    values, sources = await settings.load_with_sources(db, config)
    return {**values, "app_mode": config.app_mode,
            "max_context_tokens": config.default_context_token_limit, "sources": sources}


@routes.get("/api/settings/system")
async def get_system_settings(request: web.Request) -> web.Response:
    return ok(await _system_view(request.app[db_key].quick, request.app[config_key]))


@routes.put("/api/settings/system")
@admin_only
async def update_system_settings(request: web.Request) -> web.Response:
    config, db = request.app[config_key], request.app[db_key]
    body = await read_json(request, config.max_json_body)
    updates = settings.to_stored(SYSTEM_SETTINGS.parse(body))
    cleared = SYSTEM_SETTINGS.nulls(body)  # back to the environment or default
    if updates or cleared:
        async with db.transaction() as tx:
            before = await settings.load(tx, config)
            await store.set_system(tx, updates)
            await store.clear_system(tx, cleared)
            after = await settings.load(tx, config)
            # Effective values, old and new: a cleared key shows what it falls back to.
            changes = {key: {"from": before[key], "to": after[key]}
                       for key in [*updates, *cleared]}
            await record(tx, request, "settings_change", "settings:system",
                         {"changes": changes, **({"cleared": cleared} if cleared else {})})
    return ok(await _system_view(db, config), "Settings updated")


async def personal_view(db: Reader, config: Config, user_id: int) -> dict[str, Any]:
    row = await store.personal(db, user_id) or {}
    return {"context_token_limit": row.get("context_token_limit")
            or config.default_context_token_limit,
            "theme": row.get("theme") or "light"}


@routes.get("/api/settings/personal")
async def get_personal_settings(request: web.Request) -> web.Response:
    return ok(await personal_view(request.app[db_key], request.app[config_key],
                                  request[user_key].id))


@routes.put("/api/settings/personal")
async def update_personal_settings(request: web.Request) -> web.Response:
    config, db, user = request.app[config_key], request.app[db_key], request[user_key]
    body = await read_json(request, config.max_json_body)
    values = {k: v for k, v in PERSONAL_SETTINGS.parse(body).items() if v is not None}
    if values:
        async with db.transaction() as tx:
            await store.set_personal(tx, user.id, values)
    return ok(await personal_view(db, config, user.id), "Settings updated")
