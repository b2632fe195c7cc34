"""round_checkpoints: the text of running rounds, so a killed process loses at most a second.

A round's head row holds its metadata; each checkpoint appends only the text streamed since
the previous one as a row of round_checkpoint_parts (sql/007_checkpoint_parts.sql).

All functions are store jobs (`Database.run`): one transaction each. `instance` is the
aichat process running the round (always 0 on SQLite; store/cluster.py on PostgreSQL).
"""

from __future__ import annotations

from typing import Any, Callable

from aichat.store import messages, usage
from aichat.store.base import Reader, Transaction
from aichat.store.dialect import NOW
from aichat.store.usage import Usage

INTERRUPTED = "interrupted"  # a reply cut off by a crash: its text up to the last checkpoint
Row = tuple[int, int, int, str, str | None, int, int | None, str, str | None, bool, str | None]


async def save(tx: Transaction, rows: list[Row], instance: int = 0) -> None:
    """For each running round, (session_id, user_message_id, regenerate, model, provider,
    prompt_tokens, context_limit, new content, new reasoning, first, generation): the head
    row, then the text since the last checkpoint appended. A round's first checkpoint replaces
    whatever an earlier round of the session left (one whose reply could not be saved)."""
    firsts = [(row[0],) for row in rows if row[9]]
    if firsts:
        await tx.executemany("DELETE FROM round_checkpoints WHERE session_id = ?", firsts)
    await tx.executemany(
        "INSERT INTO round_checkpoints (session_id, user_message_id, regenerate, model,"
        " provider, prompt_tokens, context_limit, instance_id, generation)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        f" ON CONFLICT (session_id) DO UPDATE SET updated_at = {NOW},"
        " instance_id = excluded.instance_id", [(*row[:7], instance, row[10]) for row in rows])
    await tx.executemany(
        "INSERT INTO round_checkpoint_parts (session_id, content, reasoning) VALUES (?, ?, ?)",
        [(row[0], row[7], row[8] or "") for row in rows])


async def _parts(tx: Transaction, where: str,
                 params: tuple[Any, ...]) -> dict[int, tuple[list[str], list[str]]]:
    """Each leftover round's appended text, in the order it was written."""
    parts: dict[int, tuple[list[str], list[str]]] = {}
    for row in await tx.all(
            "SELECT p.session_id, p.content, p.reasoning FROM round_checkpoint_parts p"
            f" JOIN round_checkpoints c ON c.session_id = p.session_id{where}"
            " ORDER BY p.session_id, p.id", params):
        texts, thoughts = parts.setdefault(row["session_id"], ([], []))
        texts.append(row["content"])
        thoughts.append(row["reasoning"])
    return parts


async def clear(tx: Transaction, session_id: int) -> None:
    await tx.execute("DELETE FROM round_checkpoints WHERE session_id = ?", (session_id,))


async def instances(tx: Transaction) -> list[int]:
    """The instances with checkpoints (to find those left by one that is gone)."""
    rows = await tx.all("SELECT DISTINCT instance_id FROM round_checkpoints")
    return [row["instance_id"] for row in rows]


async def recover(tx: Transaction, count_tokens: Callable[[str], int],
                  instance: int | None = None) -> list[dict[str, Any]]:
    """Turn rounds cut off by a crash into 'interrupted' replies (text kept) with usage rows:
    every leftover, or only those of a dead `instance`. Each round's `streaming` reply row
    takes its text, or goes if it has none."""
    where, params = ("", ()) if instance is None else (" WHERE instance_id = ?", (instance,))
    leftovers = await tx.all(
        "SELECT c.session_id, c.user_message_id, c.regenerate, c.model, c.provider,"
        " c.prompt_tokens, c.context_limit, c.content, c.reasoning FROM round_checkpoints c"
        f"{where}", params)
    parts = await _parts(tx, where, params)
    for row in leftovers:
        content, reasoning = parts.get(row["session_id"], ([], []))
        row["content"] = row["content"] + "".join(content)
        row["reasoning"] = (row["reasoning"] or "") + "".join(reasoning)
        text, session_id = row["content"].strip(), row["session_id"]
        completion = count_tokens(text) if text else 0
        # The reply row its round stored as it started (none if an older version ran it).
        message_id = await messages.streaming_reply(tx, session_id)
        if not text:
            if message_id is not None:
                await messages.remove(tx, message_id)
            message_id = None
        else:
            if row["regenerate"]:
                await messages.drop_replies_after(tx, session_id, row["user_message_id"],
                                                  keep=message_id)
            thoughts = row["reasoning"].strip() or None
            if message_id is None:
                message_id = await messages.add(tx, session_id, "assistant", text,
                                                status=INTERRUPTED, reasoning=thoughts)
            else:
                await messages.finish(tx, message_id, text, status=INTERRUPTED,
                                      reasoning=thoughts)
        await usage.add(tx, row["model"], row["provider"],
                        Usage(row["prompt_tokens"], completion,
                              row["prompt_tokens"] + completion, True),
                        status=INTERRUPTED, session_id=row["session_id"],
                        message_id=message_id, context_limit=row["context_limit"])
        row["message_id"] = message_id
    await tx.execute(f"DELETE FROM round_checkpoints{where}", params)
    return leftovers


async def text_so_far(db: Reader, session_id: int) -> tuple[str, str, int] | None:
    """The text a round running on some instance has checkpointed: (content, reasoning, the
    last part's id, from which later reads go on), or None if it has none yet."""
    rows = await db.all(
        "SELECT id, content, reasoning FROM round_checkpoint_parts WHERE session_id = ?"
        " ORDER BY id", (session_id,))
    if not rows:
        return None
    return ("".join(r["content"] for r in rows), "".join(r["reasoning"] for r in rows),
            rows[-1]["id"])


async def progress(db: Reader, reply_id: int, after_part: int) -> list[dict[str, Any]]:
    """A streaming reply as another instance sees it, in one read: a row per checkpoint part
    after `after_part` (or one row with a NULL part), each with the reply's status, its final
    text once ended, the round's generation and its user message; no rows if it is gone."""
    return await db.all(
        "SELECT m.status, m.content AS final, m.reasoning AS final_reasoning, c.generation,"
        " (SELECT MAX(u.id) FROM messages u WHERE u.session_id = m.session_id"
        " AND u.role = 'user' AND u.id < m.id) AS user_message_id,"
        " p.id AS part, p.content, p.reasoning FROM messages m"
        " LEFT JOIN round_checkpoints c ON c.session_id = m.session_id"
        " LEFT JOIN round_checkpoint_parts p ON p.session_id = m.session_id AND p.id > ?"
        " WHERE m.id = ? ORDER BY p.id", (after_part, reply_id))
