"""usage_metrics: one row per chat round (session set) or /v1 request (no session).

Every row has its user, so a per-user sum over a time range (a quota) reads one index across
both sources. A chat row's user is its session's owner, filled in by the database
(sql/006_one_usage_table.sql), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aichat.store import prices
from aichat.store.base import Reader, Transaction, found


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool

    def numbers(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


class Source(StrEnum):
    CHAT = "chat"  # chat rounds: /api/chat/usage*
    API = "api"  # /v1 requests: /api/keys/usage


_FROM = {Source.CHAT: "session_id IS NOT NULL", Source.API: "session_id IS NULL"}


async def add(tx: Transaction, model: str, provider: str | None, usage: Usage, *,
        status: str, session_id: int | None = None, message_id: int | None = None,
        user_id: int | None = None, api_key_id: int | None = None,
        context_limit: int | None = None, cost_nanos: int | None = None) -> int:
    """Insert a row (a store job): a chat round's with its session
    (its user comes from there), a /v1 request's with its user and key."""
    return await tx.insert(
        "INSERT INTO usage_metrics (user_id, session_id, message_id, api_key_id, model,"
        " provider, status, prompt_tokens, completion_tokens, total_tokens, context_limit,"
        " estimated, cost_nanos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, session_id, message_id, api_key_id, model, provider, status,
         usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, context_limit,
         int(usage.estimated), cost_nanos))


# cost: the sum of the priced rows' costs; null when none of the rows had a price.
_SUMS = ("COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,"
         " COALESCE(SUM(completion_tokens), 0) AS completion_tokens,"
         " COALESCE(SUM(total_tokens), 0) AS total_tokens, SUM(cost_nanos) AS cost")


def _cost(row: dict[str, Any]) -> dict[str, Any]:
    """The row's `cost` (billionths, as summed or stored) as an amount of the currency."""
    row["cost"] = prices.from_nanos(row["cost"])
    return row


async def session_totals(db: Reader, session_id: int) -> dict[str, int]:
    return _cost(found(await db.one(
        f"SELECT {_SUMS} FROM usage_metrics WHERE session_id = ?", (session_id,))))


async def last_round(db: Reader, session_id: int) -> dict[str, Any] | None:
    row = await db.one(
        "SELECT prompt_tokens, completion_tokens, total_tokens, context_limit,"
        " created_at AS \"createdAt\", model, provider, cost_nanos AS cost FROM usage_metrics"
        " WHERE session_id = ? ORDER BY created_at DESC, id DESC LIMIT 1", (session_id,))
    return _cost(row) if row is not None else None


async def per_session(db: Reader, user_id: int) -> list[dict[str, Any]]:
    rows = await db.all(
        f"SELECT session_id AS \"sessionId\", {_SUMS} FROM usage_metrics"
        f" WHERE user_id = ? AND {_FROM[Source.CHAT]}"
        " GROUP BY session_id ORDER BY session_id DESC", (user_id,))
    return [{"sessionId": r.pop("sessionId"), "totals": _cost(r)} for r in rows]


async def daily(db: Reader, user_id: int, start: str, end: str, source: Source, *,
                session_id: int | None = None, per_model: bool = False) -> list[dict[str, Any]]:
    """Sums per UTC day (and model, with a request count, if `per_model`) between two ISO
    timestamps (inclusive), oldest day first; only one session's rows if `session_id`."""
    where, params = "", [user_id, start, end]
    if session_id is not None:
        where, params = " AND session_id = ?", [*params, session_id]
    columns, groups = ("model, COUNT(*) AS requests, ", ", model") if per_model else ("", "")
    return [_cost(row) for row in await db.all(
        f"SELECT substr(created_at, 1, 10) AS date, {columns}{_SUMS} FROM usage_metrics"
        f" WHERE user_id = ? AND created_at BETWEEN ? AND ? AND {_FROM[source]}{where}"
        f" GROUP BY date{groups} ORDER BY date{groups}", params)]


# The groupings of the admin summary: key columns, GROUP BY, ORDER BY.
SUMMARY_GROUPS = {
    "user": ('u.user_id AS "userId", users.username', "u.user_id, users.username",
             "users.username, u.user_id"),
    "model": ("u.model", "u.model", "u.model"),
    "day": ("substr(u.created_at, 1, 10) AS date", "substr(u.created_at, 1, 10)", "date"),
}


async def summary(db: Reader, start: str, end: str, group_by: str) -> list[dict[str, Any]]:
    """Every user's usage (chat rounds and /v1 requests) between two ISO timestamps,
    grouped by user, model or UTC day: rounds, tokens and cost."""
    columns, groups, order = SUMMARY_GROUPS[group_by]
    sums = _SUMS.replace("SUM(", "SUM(u.")
    return [_cost(row) for row in await db.all(
        f"SELECT {columns}, COUNT(*) AS rounds, {sums} FROM usage_metrics u"
        " JOIN users ON users.id = u.user_id WHERE u.created_at BETWEEN ? AND ?"
        f" GROUP BY {groups} ORDER BY {order}", (start, end))]


async def newest_id(db: Reader, session_id: int) -> int:
    """The session's newest usage row (0 if none): the next round's row comes after it."""
    return int(await db.value("SELECT COALESCE(MAX(id), 0) FROM usage_metrics"
                              " WHERE session_id = ?", (session_id,)))


async def round_after(db: Reader, session_id: int, after_id: int) -> dict[str, Any] | None:
    """How the session's round that ended after usage row `after_id` was counted."""
    return await db.one(
        "SELECT status, prompt_tokens, completion_tokens, total_tokens, context_limit"
        " FROM usage_metrics WHERE session_id = ? AND id > ? ORDER BY id LIMIT 1",
        (session_id, after_id))
