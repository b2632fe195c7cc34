"""round_checkpoints: the text of running rounds, so a killed process loses at most a second.

A round's head row holds its metadata; each checkpoint appends only the text streamed since
the previous one as a row of round_checkpoint_parts (sql/007_checkpoint_parts.sql).

All functions are synchronous and run inside a `Database.run` job (one transaction).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from aichat.store import messages, usage
from aichat.store.usage import Usage

INTERRUPTED = "interrupted"  # a reply cut off by a crash: its text up to the last checkpoint
Row = tuple[int, int, int, str, str | None, int, int | None, str, str | None, bool]


def save(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """For each running round, (session_id, user_message_id, regenerate, model, provider,
    prompt_tokens, context_limit, new content, new reasoning, first): the head row, then the
    text since the last checkpoint appended. A round's first checkpoint replaces whatever an
    earlier round of the session left (one whose reply could not be saved)."""
    firsts = [(row[0],) for row in rows if row[9]]
    if firsts:
        conn.executemany("DELETE FROM round_checkpoints WHERE session_id = ?", firsts)
    conn.executemany(
        "INSERT INTO round_checkpoints (session_id, user_message_id, regenerate, model,"
        " provider, prompt_tokens, context_limit) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (session_id) DO UPDATE SET"
        " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [row[:7] for row in rows])
    conn.executemany(
        "INSERT INTO round_checkpoint_parts (session_id, content, reasoning) VALUES (?, ?, ?)",
        [(row[0], row[7], row[8] or "") for row in rows])


def _parts(conn: sqlite3.Connection) -> dict[int, tuple[list[str], list[str]]]:
    """Every leftover round's appended text, in the order it was written."""
    parts: dict[int, tuple[list[str], list[str]]] = {}
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples, whatever the connection's factory
    for session_id, content, reasoning in cursor.execute(
            "SELECT session_id, content, reasoning FROM round_checkpoint_parts"
            " ORDER BY session_id, id"):
        texts, thoughts = parts.setdefault(session_id, ([], []))
        texts.append(content)
        thoughts.append(reasoning)
    return parts


def clear(conn: sqlite3.Connection, session_id: int) -> None:
    conn.execute("DELETE FROM round_checkpoints WHERE session_id = ?", (session_id,))


def recover(conn: sqlite3.Connection, count_tokens: Callable[[str], int]) -> list[dict[str, Any]]:
    """Turn rounds cut off by a crash into 'interrupted' replies (text kept) with usage rows."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    leftovers = [dict(row) for row in cursor.execute(
        "SELECT session_id, user_message_id, regenerate, model, provider, prompt_tokens,"
        " context_limit, content, reasoning FROM round_checkpoints")]
    parts = _parts(conn)
    for row in leftovers:
        content, reasoning = parts.get(row["session_id"], ([], []))
        row["content"] = row["content"] + "".join(content)
        row["reasoning"] = (row["reasoning"] or "") + "".join(reasoning)
        text, message_id = row["content"].strip(), None
        if text:
            if row["regenerate"]:
                messages.drop_replies_after(conn, row["session_id"], row["user_message_id"])
            message_id = messages.add(conn, row["session_id"], "assistant", text,
                                      status=INTERRUPTED,
                                      reasoning=row["reasoning"].strip() or None)
        completion = count_tokens(text) if text else 0
        usage.add(conn, row["model"], row["provider"],
                  Usage(row["prompt_tokens"], completion, row["prompt_tokens"] + completion,
                        True), status=INTERRUPTED, session_id=row["session_id"],
                  message_id=message_id, context_limit=row["context_limit"])
        row["message_id"] = message_id
    conn.execute("DELETE FROM round_checkpoints")
    return leftovers
