"""round_checkpoints: the text of running rounds, so a killed process loses at most a second.

All functions are synchronous and run inside a `Database.run` job (one transaction).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from aichat.store import messages, usage
from aichat.store.usage import Usage

INTERRUPTED = "interrupted"  # a reply cut off by a crash: its text up to the last checkpoint
Row = tuple[int, int, int, str, str | None, int, int | None, str, str | None]


def save(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Upsert (session_id, user_message_id, regenerate, model, provider, prompt_tokens,
    context_limit, content, reasoning) for each running round."""
    conn.executemany(
        "INSERT INTO round_checkpoints (session_id, user_message_id, regenerate, model,"
        " provider, prompt_tokens, context_limit, content, reasoning)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
        " user_message_id = excluded.user_message_id, content = excluded.content,"
        " reasoning = excluded.reasoning,"
        " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", rows)


def clear(conn: sqlite3.Connection, session_id: int) -> None:
    conn.execute("DELETE FROM round_checkpoints WHERE session_id = ?", (session_id,))


def recover(conn: sqlite3.Connection, count_tokens: Callable[[str], int]) -> list[dict[str, Any]]:
    """Turn rounds cut off by a crash into 'interrupted' replies (text kept) with usage rows."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    leftovers = [dict(row) for row in cursor.execute(
        "SELECT session_id, user_message_id, regenerate, model, provider, prompt_tokens,"
        " context_limit, content, reasoning FROM round_checkpoints")]
    for row in leftovers:
        text, message_id = row["content"].strip(), None
        if text:
            if row["regenerate"]:
                messages.drop_replies_after(conn, row["session_id"], row["user_message_id"])
            message_id = messages.add(conn, row["session_id"], "assistant", text,
                                      status=INTERRUPTED,
                                      reasoning=(row["reasoning"] or "").strip() or None)
        completion = count_tokens(text) if text else 0
        usage.add(conn, row["model"], row["provider"],
                  Usage(row["prompt_tokens"], completion, row["prompt_tokens"] + completion,
                        True), status=INTERRUPTED, session_id=row["session_id"],
                  message_id=message_id, context_limit=row["context_limit"])
        row["message_id"] = message_id
    conn.execute("DELETE FROM round_checkpoints")
    return leftovers
