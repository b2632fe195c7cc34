"""messages: the turns of a session, each assistant reply with how it ended and its usage.

A streamed round's reply is stored as it starts, `streaming` and empty (its text lives in the
round, and in the checkpoints for other instances), and the same row takes the final text and
status when it ends (docs/api.md §5.9).
"""

from __future__ import annotations

from typing import Any

from aichat.store.base import Reader, Transaction

_MESSAGE = """
    SELECT m.id, m.session_id AS "sessionId", m.role, m.content, m.created_at AS "createdAt",
           m.status, m.reasoning, u.prompt_tokens, u.completion_tokens, u.total_tokens
    FROM messages m LEFT JOIN usage_metrics u ON u.message_id = m.id
"""
_OLDEST = "ORDER BY m.created_at, m.id"


def shape(row: dict[str, Any]) -> dict[str, Any]:
    prompt, completion, total = (row.pop("prompt_tokens"), row.pop("completion_tokens"),
                                 row.pop("total_tokens"))
    row["usage"] = None if prompt is None else {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return row


async def list_all(db: Reader, session_id: int) -> list[dict[str, Any]]:
    rows = await db.all(f"{_MESSAGE} WHERE m.session_id = ? {_OLDEST}", (session_id,))
    return [shape(r) for r in rows]


async def list_page(db: Reader, session_id: int, page: int,
                    limit: int) -> tuple[list[dict[str, Any]], int]:
    total = await db.value("SELECT COUNT(*) FROM messages WHERE session_id = ?", (session_id,))
    rows = await db.all(f"{_MESSAGE} WHERE m.session_id = ? {_OLDEST} LIMIT ? OFFSET ?",
                        (session_id, limit, (page - 1) * limit))
    return [shape(r) for r in rows], total


async def get(db: Reader, message_id: int) -> dict[str, Any] | None:
    row = await db.one(f"{_MESSAGE} WHERE m.id = ?", (message_id,))
    return shape(row) if row else None


async def add(tx: Transaction, session_id: int, role: str, content: str, *,
        status: str = "complete", reasoning: str | None = None,
        tokens: tuple[int, str] | None = None) -> int:
    """Insert a message (a store job); `tokens` = (count, mode)."""
    count, mode = tokens if tokens else (None, None)
    return await tx.insert(
        "INSERT INTO messages (session_id, role, content, status, reasoning, token_count,"
        " token_mode) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, role, content, status, reasoning, count, mode))


STREAMING = "streaming"


async def finish(tx: Transaction, message_id: int, content: str, *, status: str,
                 reasoning: str | None, tokens: tuple[int, str] | None = None) -> bool:
    """A streaming reply's final text and status (a store job); False if it is gone (its
    messages were deleted while the round ended). `tokens` as in `add`."""
    count, mode = tokens if tokens else (None, None)
    return await tx.execute(
        "UPDATE messages SET content = ?, status = ?, reasoning = ?, token_count = ?,"
        " token_mode = ? WHERE id = ? AND status = 'streaming'",
        (content, status, reasoning, count, mode, message_id)) > 0


async def remove(tx: Transaction, message_id: int) -> None:
    """A streaming reply that ends with no text: nothing to keep."""
    await tx.execute("DELETE FROM messages WHERE id = ? AND status = 'streaming'", (message_id,))


async def streaming_reply(db: Reader, session_id: int) -> int | None:
    """The session's reply being generated (one round runs per session)."""
    return await db.value("SELECT id FROM messages WHERE session_id = ? AND status = 'streaming'"
                          " ORDER BY id DESC LIMIT 1", (session_id,))


async def drop_streaming(tx: Transaction, unless_running: bool) -> int:
    """Delete replies left `streaming` with no text to keep, after a crash's checkpoints were
    recovered: all of them (one SQLite process, at start), or (several instances) those
    whose session has no round running on any live instance."""
    where = (" AND NOT EXISTS (SELECT 1 FROM live_rounds l"
             " WHERE l.session_id = messages.session_id)"
             " AND NOT EXISTS (SELECT 1 FROM round_checkpoints c"
             " WHERE c.session_id = messages.session_id)") if unless_running else ""
    return await tx.execute(f"DELETE FROM messages WHERE status = 'streaming'{where}")


async def history(db: Reader, session_id: int, before_id: int | None,
                  limit: int) -> list[dict[str, Any]]:
    """The newest non-empty messages (before `before_id` if given), newest first."""
    where = " AND id < ?" if before_id is not None else ""
    params = (session_id, before_id, limit) if before_id is not None else (session_id, limit)
    return await db.all(
        "SELECT id, role, content, token_count, token_mode FROM messages"
        f" WHERE session_id = ? AND content != ''{where}"
        " ORDER BY created_at DESC, id DESC LIMIT ?", params)


async def last_user(db: Reader, session_id: int) -> dict[str, Any] | None:
    return await db.one(
        "SELECT id, content, token_count, token_mode FROM messages"
        " WHERE session_id = ? AND role = 'user' ORDER BY created_at DESC, id DESC LIMIT 1",
        (session_id,))


async def latest_reply_id(db: Reader, session_id: int) -> int | None:
    return await db.value(
        "SELECT id FROM messages WHERE session_id = ? AND role = 'assistant'"
        " ORDER BY created_at DESC, id DESC LIMIT 1", (session_id,))


async def is_reply(db: Reader, message_id: int, session_id: int) -> bool:
    """Whether the message is an assistant reply in this session."""
    return await db.value("SELECT 1 FROM messages WHERE id = ? AND session_id = ?"
                          " AND role = 'assistant'", (message_id, session_id)) is not None


async def drop_replies_after(tx: Transaction, session_id: int, user_message_id: int,
                             keep: int | None = None) -> None:
    """Drop the assistant replies that follow a user message (regenerate replaces them), but
    `keep` (the new one)."""
    await tx.execute("DELETE FROM messages WHERE session_id = ? AND role = 'assistant' AND id > ?"
                     " AND id <> ?", (session_id, user_message_id, keep or 0))


async def delete_for_session(tx: Transaction, session_id: int) -> None:
    """Usage rows stay, their message link set to NULL by the foreign key."""
    await tx.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
