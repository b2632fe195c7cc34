"""chat_sessions: owned by one user, always read through `user_id = ?`."""

from __future__ import annotations

from typing import Any

from aichat.store.base import Reader, Transaction

_SUMMARY = """
    SELECT s.id, s.user_id AS "userId", s.model_config_id AS "modelConfigId", s.title,
           s.created_at AS "createdAt", m.name AS "modelName", m.supports_images AS "modelImages",
           (SELECT COUNT(*) FROM messages WHERE session_id = s.id) AS "messageCount"
    FROM chat_sessions s JOIN model_configs m ON m.id = s.model_config_id
"""


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    row["modelConfig"] = {"id": row["modelConfigId"], "name": row.pop("modelName"),
                          "supportsImages": bool(row.pop("modelImages"))}
    row["_count"] = {"messages": row.pop("messageCount")}
    return row


async def list_page(db: Reader, user_id: int, page: int,
                    limit: int) -> tuple[list[dict[str, Any]], int]:
    total = await db.value("SELECT COUNT(*) FROM chat_sessions WHERE user_id = ?", (user_id,))
    rows = await db.all(
        f"{_SUMMARY} WHERE s.user_id = ? ORDER BY s.created_at DESC, s.id DESC LIMIT ? OFFSET ?",
        (user_id, limit, (page - 1) * limit))
    return [_summary(r) for r in rows], total


async def summary(db: Reader, session_id: int, user_id: int) -> dict[str, Any] | None:
    row = await db.one(f"{_SUMMARY} WHERE s.id = ? AND s.user_id = ?", (session_id, user_id))
    return _summary(row) if row else None


async def owned(db: Reader, session_id: int, user_id: int) -> dict[str, Any] | None:
    """The bare row, for checks on the hot path (no joins, no counts)."""
    return await db.one("SELECT id, user_id, model_config_id, title FROM chat_sessions"
                        " WHERE id = ? AND user_id = ?", (session_id, user_id))


async def create(tx: Transaction, user_id: int, model_id: int, title: str) -> int:
    return await tx.insert(
        "INSERT INTO chat_sessions (user_id, model_config_id, title) VALUES (?, ?, ?)",
        (user_id, model_id, title))


async def rename(tx: Transaction, session_id: int, user_id: int, title: str) -> bool:
    return await tx.execute("UPDATE chat_sessions SET title = ? WHERE id = ? AND user_id = ?",
                            (title, session_id, user_id)) > 0


async def delete(tx: Transaction, session_id: int, user_id: int) -> bool:
    """Messages and usage rows go with it (ON DELETE CASCADE)."""
    return await tx.execute("DELETE FROM chat_sessions WHERE id = ? AND user_id = ?",
                            (session_id, user_id)) > 0
