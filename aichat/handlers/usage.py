"""/api/chat usage: per session, per session list, per UTC day (docs/api.md §6.4).

Chat rounds only: what /v1 requests used is under /api/keys/usage.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from aiohttp import web

import csv
import io

from aichat.chat.context import HISTORY_MESSAGES, fit
from aichat.chat.service import context_limit
from aichat.http.access import admin_only
from aichat.http.errors import ApiError, not_found, ok
from aichat.http.appkeys import config_key, db_key, tokenizer_key, user_key
from aichat.settings import system as settings
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


@routes.get("/api/usage/summary")
@admin_only
async def usage_summary(request: web.Request) -> web.StreamResponse:
    """Everyone's usage by user, model or UTC day (docs/api.md §6.4); CSV on `Accept:
    text/csv`."""
    start_iso, end_iso = date_range(request)
    group_by = request.query.get("groupBy") or "user"
    if group_by not in usage.SUMMARY_GROUPS:
        raise ApiError(400, f"groupBy must be one of {', '.join(usage.SUMMARY_GROUPS)}")
    app = request.app
    rows = await usage.summary(app[db_key], start_iso, end_iso, group_by)
    currency = (await settings.load(app[db_key].quick, app[config_key]))["currency"]
    if "text/csv" in request.headers.get("Accept", ""):
        return web.Response(body=_csv(rows, group_by).encode(), headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="usage-by-{group_by}.csv"'})
    return ok({"from": start_iso, "to": end_iso, "groupBy": group_by, "currency": currency,
               "rows": rows})


SUMMARY_KEYS = {"user": ["userId", "username"], "model": ["model"], "day": ["date"]}
SUMMARY_NUMBERS = ["rounds", "prompt_tokens", "completion_tokens", "total_tokens", "cost"]


def _csv(rows: list[dict[str, object]], group_by: str) -> str:
    """One header line, then a line per row; an unknown cost is an empty field."""
    out = io.StringIO()
    columns = SUMMARY_KEYS[group_by] + SUMMARY_NUMBERS
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return out.getvalue()


def _cell(value: object) -> object:
    """A model name is anyone's text: one a spreadsheet would run as a formula is quoted."""
    if value is None:
        return ""
    if isinstance(value, float):  # a cost, to the billionth: plain digits, no exponent
        return f"{value:.9f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
