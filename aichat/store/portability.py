"""The reads of an export and the writes of an import (docs/api.md §12).

Exports read in keyset pages, in the order the app shows (created_at, then id), so a long
history is never read whole: sessions SESSION_PAGE at a time; messages first as bare sizes
(MESSAGE_PAGE at a time), then their text in groups of at most TEXT_BUDGET characters (a
message larger than that alone). Replies still being generated (`streaming`, empty until the
round ends) are left out.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

from aichat.store import prices
from aichat.store.base import Reader, Transaction

SESSION_PAGE = 100
MESSAGE_PAGE = 500  # rows of (id, created_at, size): a few dozen bytes each
TEXT_BUDGET = 1024 * 1024  # characters of content and reasoning read at once


async def personal_models(db: Reader, user_id: int) -> list[dict[str, Any]]:
    """The user's own model configs, oldest first, without their keys (the key column is
    never selected here)."""
    rows = await db.all(
        "SELECT name, api_url, supports_images, input_price_micros, output_price_micros"
        " FROM model_configs WHERE user_id = ? ORDER BY id", (user_id,))
    return [{"name": r["name"], "apiUrl": r["api_url"],
             "supportsImages": bool(r["supports_images"]),
             "inputPricePerMTok": prices.from_micros(r["input_price_micros"]),
             "outputPricePerMTok": prices.from_micros(r["output_price_micros"])} for r in rows]


async def sessions(db: Reader, user_id: int) -> AsyncIterator[dict[str, Any]]:
    """The user's sessions, oldest first: id, title, createdAt, model (its name)."""
    after: tuple[str, int] = ("", 0)
    while True:
        rows = await db.all(
            "SELECT s.id, s.title, s.created_at AS \"createdAt\", m.name AS model"
            " FROM chat_sessions s JOIN model_configs m ON m.id = s.model_config_id"
            " WHERE s.user_id = ? AND (s.created_at, s.id) > (?, ?)"
            " ORDER BY s.created_at, s.id LIMIT ?", (user_id, *after, SESSION_PAGE))
        for row in rows:
            yield row
        if len(rows) < SESSION_PAGE:
            return
        after = (rows[-1]["createdAt"], rows[-1]["id"])


_TEXT = """
    SELECT m.id, m.role, m.content, m.reasoning, m.status, m.created_at AS "createdAt",
           u.prompt_tokens, u.completion_tokens, u.total_tokens
    FROM messages m LEFT JOIN usage_metrics u ON u.message_id = m.id
"""


async def messages(db: Reader, session_id: int) -> AsyncIterator[dict[str, Any]]:
    """A session's finished messages, oldest first: role, content, reasoning, status,
    createdAt, usage (None without a usage row)."""
    after: tuple[str, int] = ("", 0)
    while True:
        sizes = await db.all(
            "SELECT id, created_at, LENGTH(content) + COALESCE(LENGTH(reasoning), 0) AS size"
            " FROM messages WHERE session_id = ? AND status <> 'streaming'"
            " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
            (session_id, *after, MESSAGE_PAGE))
        for group in _groups(sizes):
            marks = ", ".join("?" for _ in group)
            rows = await db.all(f"{_TEXT} WHERE m.id IN ({marks}) ORDER BY m.created_at, m.id",
                                group)
            for row in rows:
                yield _shape(row)
        if len(sizes) < MESSAGE_PAGE:
            return
        after = (sizes[-1]["created_at"], sizes[-1]["id"])


def _groups(sizes: list[dict[str, Any]]) -> list[list[int]]:
    """Consecutive ids whose text adds up to at most TEXT_BUDGET characters (at least one)."""
    groups: list[list[int]] = []
    total = TEXT_BUDGET
    for row in sizes:
        if total + row["size"] > TEXT_BUDGET:
            groups.append([])
            total = 0
        groups[-1].append(row["id"])
        total += row["size"]
    return groups


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    prompt, completion, total = (row.pop("prompt_tokens"), row.pop("completion_tokens"),
                                 row.pop("total_tokens"))
    del row["id"]
    row["usage"] = None if prompt is None else {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return row


async def personal_settings(db: Reader, user_id: int) -> dict[str, Any]:
    """The user's own choices; None where they follow the default."""
    row = await db.one("SELECT context_token_limit, theme FROM user_settings WHERE user_id = ?",
                       (user_id,))
    return {"context_token_limit": row["context_token_limit"] if row else None,
            "theme": row["theme"] if row else None}


async def default_model(db: Reader, user_id: int) -> int | None:
    """The model imported chats fall back to: the user's oldest own, else the oldest system
    one."""
    return await db.value(
        "SELECT id FROM model_configs WHERE user_id = ? OR user_id IS NULL"
        " ORDER BY user_id IS NULL, id LIMIT 1", (user_id,))


async def add_session(tx: Transaction, user_id: int, model_id: int, title: str,
                      created_at: str, rows: Sequence[tuple[str, str, str | None, str, str]]
                      ) -> None:
    """A session with its messages, each (role, content, reasoning, status, created_at); a
    store job (SQLite runs it on the database thread in one hop)."""
    session_id = await tx.insert(
        "INSERT INTO chat_sessions (user_id, model_config_id, title, created_at)"
        " VALUES (?, ?, ?, ?)", (user_id, model_id, title, created_at))
    if rows:
        await tx.executemany(
            "INSERT INTO messages (session_id, role, content, reasoning, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(session_id, *row) for row in rows])
