"""GET /api/admin/audit: the audit log, newest first (docs/api.md, "Audit log"); and what the
handlers that write it share: who acted, from which address, and URLs fit to keep."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from aichat.http.access import admin_only
from aichat.http.appkeys import db_key, trusted_proxies_key, user_key
from aichat.http.bodies import AUDIT_PAGE
from aichat.http.errors import ApiError, ok
from aichat.http.fields import MAX_SQL_INT
from aichat.http.validate import pagination
from aichat.security.ratelimit import client_address
from aichat.store import audit
from aichat.store.db import Transaction
from aichat.store.users import User
from aichat.timeutil import iso

routes = web.RouteTableDef()

ACTOR_RULE = "actor must be a user id or system"
ACTION_RULE = f"action must be one of: {', '.join(audit.ACTIONS)}"
MOMENT_RULE = "{} must be an ISO date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM:SS)"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")


def actor(request: web.Request, user: User | None = None) -> audit.Actor:
    """The caller (or `user`, who has just signed in or registered) at the client's address
    (TRUSTED_PROXIES honoured). /api takes tokens only, so never an API key here."""
    user = user or request[user_key]
    return audit.Actor("user", user.id, None, user.username, address(request))


def address(request: web.Request) -> str:
    return client_address(request, request.app[trusted_proxies_key])


async def record(tx: Transaction, request: web.Request, action: str, target: str,
                 detail: dict[str, Any] | None = None, *, user: User | None = None) -> None:
    """The caller's event, in the transaction of the change it records."""
    await audit.add(tx, actor(request, user), action, target, detail)


def url_shown(url: str) -> str:
    """scheme://host[:port]/path of a model URL: never the user info, query or fragment, where
    a provider key may ride."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a stored URL from before its check: the host is enough
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _actor_filter(raw: str) -> dict[str, Any]:
    if raw == "system":
        return {"system": True}
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 30) or int(raw) == 0:
        raise ApiError(400, ACTOR_RULE)
    user_id = int(raw)
    return {"actor_user_id": user_id if user_id <= MAX_SQL_INT else 0}  # 0 matches nothing


def _moment(request: web.Request, name: str, end_of_day: bool) -> str | None:
    """An ISO date (its first or last millisecond) or date-time (no offset: UTC) as the
    stored form; None when absent or empty."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        if _DATE.fullmatch(raw):
            day = datetime.strptime(raw, "%Y-%m-%d").date()
            clock = time(23, 59, 59, 999000) if end_of_day else time(0)
            return iso(datetime.combine(day, clock, tzinfo=UTC))
        if _DATE_TIME.fullmatch(raw):
            moment = datetime.fromisoformat(raw)
            return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        pass
    raise ApiError(400, MOMENT_RULE.format(name))


def _filters(request: web.Request) -> audit.Filters:
    given: dict[str, Any] = {}
    if raw_actor := request.query.get("actor"):
        given.update(_actor_filter(raw_actor))
    if action := request.query.get("action"):
        if action not in audit.ACTIONS:
            raise ApiError(400, ACTION_RULE)
        given["action"] = action
    start, end = _moment(request, "from", False), _moment(request, "to", True)
    if start is not None and end is not None and start > end:
        raise ApiError(400, "from must not be after to")
    return audit.Filters(**given, start=start, end=end)


@routes.get("/api/admin/audit")
@admin_only
async def list_audit(request: web.Request) -> web.Response:
    page, limit = AUDIT_PAGE.read(request)
    filters = _filters(request)
    rows, total = await audit.list_page(request.app[db_key], page, limit, filters)
    return ok({"events": rows, "pagination": pagination(page, limit, total)})
