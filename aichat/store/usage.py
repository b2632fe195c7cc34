"""usage_metrics: one row per round, summed per session and per UTC day."""

from __future__ import annotations

from dataclasses import dataclass
import sqlite3
from typing import Any

from aichat.store.db import Reader


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool

    def numbers(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


def add(conn: sqlite3.Connection, session_id: int, message_id: int | None, model: str,
        provider: str | None, usage: Usage, context_limit: int | None) -> int:
    """Insert a round's row (synchronously, inside a transaction)."""
    return conn.execute(
        "INSERT INTO usage_metrics (session_id, message_id, model, provider, prompt_tokens,"
        " completion_tokens, total_tokens, context_limit, estimated)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, message_id, model, provider, usage.prompt_tokens, usage.completion_tokens,
         usage.total_tokens, context_limit, int(usage.estimated))).lastrowid


_SUMS = ("COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,"
         " COALESCE(SUM(completion_tokens), 0) AS completion_tokens,"
         " COALESCE(SUM(total_tokens), 0) AS total_tokens")


async def session_totals(db: Reader, session_id: int) -> dict[str, int]:
    return await db.one(f"SELECT {_SUMS} FROM usage_metrics WHERE session_id = ?", (session_id,))


async def last_round(db: Reader, session_id: int) -> dict[str, Any] | None:
    return await db.one(
        "SELECT prompt_tokens, completion_tokens, total_tokens, context_limit,"
        " created_at AS createdAt, model, provider FROM usage_metrics WHERE session_id = ?"
        " ORDER BY created_at DESC, id DESC LIMIT 1", (session_id,))


async def per_session(db: Reader, user_id: int) -> list[dict[str, Any]]:
    rows = await db.all(
        f"SELECT u.session_id AS sessionId, {_SUMS} FROM usage_metrics u"
        " JOIN chat_sessions s ON s.id = u.session_id WHERE s.user_id = ?"
        " GROUP BY u.session_id ORDER BY u.session_id DESC", (user_id,))
    return [{"sessionId": r.pop("sessionId"), "totals": r} for r in rows]


async def daily(db: Reader, user_id: int, start: str, end: str,
                session_id: int | None) -> list[dict[str, Any]]:
    """Sums per UTC day between two ISO timestamps (inclusive), oldest day first."""
    where, params = "", [user_id, start, end]
    if session_id is not None:
        where, params = " AND u.session_id = ?", [*params, session_id]
    return await db.all(
        f"SELECT substr(u.created_at, 1, 10) AS date, {_SUMS} FROM usage_metrics u"
        " JOIN chat_sessions s ON s.id = u.session_id"
        f" WHERE s.user_id = ? AND u.created_at BETWEEN ? AND ?{where}"
        " GROUP BY date ORDER BY date", params)
