"""Export and import of a user's own data (docs/api.md §12)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import AsyncGenerator

from aiohttp import web

from aichat.handlers.audit import record
from aichat.http.access import admin_only
from aichat.http.appkeys import config_key, db_key, user_key
from aichat.http.errors import ApiError, not_found, ok
from aichat.http.validate import path_id, read_capped
from aichat.portability import document, importer, markdown
from aichat.portability.plan import Limits
from aichat.settings import system as settings
from aichat.store import users
from aichat.timeutil import now_iso

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

EXPORT_FORMATS = ("json", "markdown")
FORMAT_RULE = "format must be json or markdown"
_NOT_FILENAME = re.compile(r"[^A-Za-z0-9_-]")


def _format(request: web.Request) -> str:
    """The `format` query parameter: absent or empty is json."""
    chosen = request.query.get("format") or "json"
    if chosen not in EXPORT_FORMATS:
        raise ApiError(400, FORMAT_RULE)
    return chosen


async def _send(request: web.Request, chosen: str, user_id: int,
                username: str) -> web.StreamResponse:
    """The export, written as it is read. Its first piece is made before the headers go, so a
    failure up to there is an ordinary error answer; a later one cuts the transfer short (the
    client sees an incomplete body, never a complete-looking file)."""
    db = request.app[db_key]
    pieces: AsyncGenerator[bytes, None]
    if chosen == "markdown":
        pieces, content_type, extension = markdown.chunks(db, user_id), "application/zip", "zip"
    else:
        pieces = document.chunks(db, user_id, username)
        content_type, extension = "application/json", "json"
    async with contextlib.aclosing(pieces):
        first = await anext(pieces)
        name = f"aichat-export-{_NOT_FILENAME.sub('_', username)}-{now_iso()[:10]}.{extension}"
        response = web.StreamResponse(headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
        response.content_type = content_type
        if extension == "json":
            response.charset = "utf-8"
        await response.prepare(request)
        try:
            await response.write(first)
            async for piece in pieces:
                await response.write(piece)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left
        except Exception:
            log.exception("export of user %d failed part-way", user_id)
            if request.transport is not None:
                request.transport.close()
    return response


@routes.get("/api/export")
async def export_own(request: web.Request) -> web.StreamResponse:
    user = request[user_key]
    return await _send(request, _format(request), user.id, user.username)


@routes.get("/api/users/{id}/export")
@admin_only
async def export_user(request: web.Request) -> web.StreamResponse:
    user_id = path_id(request, "id", "user")
    chosen = _format(request)
    async with request.app[db_key].transaction() as tx:
        target = await users.get(tx, user_id)
        if target is None:
            raise not_found("User")
        await record(tx, request, "user_export", f"user:{user_id}",
                     {"username": target.username, "format": chosen})
    return await _send(request, chosen, target.id, target.username)


@routes.post("/api/import")
async def import_data(request: web.Request) -> web.Response:
    config, db, user = request.app[config_key], request.app[db_key], request[user_key]
    raw = await read_capped(request, config.max_import_bytes)
    reply_chars = (await settings.load(db.quick, config))["max_reply_chars"]
    plan = await asyncio.to_thread(importer.parse, raw,
                                    Limits(reply_chars, user_chars=reply_chars))
    del raw  # the plan holds what is kept
    async with db.transaction() as tx:
        await importer.write(tx, user.id, plan)
    return ok(plan.report(), "Import complete")
