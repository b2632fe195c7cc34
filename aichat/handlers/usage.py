"""/api/chat usage: per session, per session list, per UTC day (docs/api.md §6.4).

Chat rounds only: what /v1 requests used is under /api/keys/usage.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from aiohttp import web

from aichat.chat.context import HISTORY_MESSAGES, fit
from aichat.chat.service import context_limit
from aichat.http.errors import ApiError, not_found, ok
from aichat.http.appkeys import db_key, tokenizer_key, user_key
from aichat.store import messages, sessions, usage
from aichat.timeutil import iso
from aichat.http.validate import query_id, required_query_id

routes = web.RouteTableDef()

RANGE_ERROR = "Invalid date range"


@routes.get("/api/chat/usage")
async def session_usage(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    session_id = required_query_id(request, "sessionId")
    if await sessions.owned(db, session_id, user.id) is None:
        raise not_found("Chat session")
    history = await messages.history(db, session_id, None, HISTORY_MESSAGES)
    context = await fit(request.app[tokenizer_key], history,
                        await context_limit(request.app, user.id), None)
    return ok({"totals": await usage.session_totals(db, session_id),
               "last_round": await usage.last_round(db, session_id),
               "current": context.usage()})


@routes.get("/api/chat/sessions/usage")
async def sessions_usage(request: web.Request) -> web.Response:
    return ok(await usage.per_session(request.app[db_key], request[user_key].id))


def _moment(raw: str, end_of_day: bool) -> datetime:
    """A date (whole day) or an ISO date-time, in UTC; naive values are UTC. An instant that
    falls outside years 1-9999 once in UTC (0001-01-01T00:00+01:00) is not a usable bound."""
    try:
        if len(raw) == 10:
            day = datetime.strptime(raw, "%Y-%m-%d").date()
            clock = time(23, 59, 59, 999000) if end_of_day else time(0)
            return datetime.combine(day, clock, tzinfo=UTC)
        moment = datetime.fromisoformat(raw)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(400, RANGE_ERROR) from None


def date_range(request: web.Request) -> tuple[str, str]:
    """`from`/`to` (ISO dates or date-times) as ISO bounds; defaults now - 30 days / now."""
    now = datetime.now(UTC)
    raw_from, raw_to = request.query.get("from"), request.query.get("to")
    start = _moment(raw_from, False) if raw_from else now - timedelta(days=30)
    end = _moment(raw_to, True) if raw_to else now
    if start > end:
        raise ApiError(400, RANGE_ERROR)
    return iso(start), iso(end)


@routes.get("/api/chat/usage/daily")
async def daily_usage(request: web.Request) -> web.Response:
    db, user = request.app[db_key], request[user_key]
    start_iso, end_iso = date_range(request)
    session_id = query_id(request, "sessionId")
    if session_id is not None and await sessions.owned(db, session_id, user.id) is None:
        raise not_found("Chat session")
    rows = await usage.daily(db, user.id, start_iso, end_iso, usage.Source.CHAT,
                             session_id=session_id)
    return ok({"from": start_iso, "to": end_iso, "rows": rows})
