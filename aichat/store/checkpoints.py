"""round_checkpoints: the text of running rounds, so a killed process loses at most a second.

A round's head row holds its metadata; each checkpoint appends only the text streamed since
the previous one as a row of round_checkpoint_parts (sql/007_checkpoint_parts.sql).

All functions are store jobs (`Database.run`): one transaction each. `instance` is the
aichat process running the round (always 0 on SQLite; store/cluster.py on PostgreSQL).
"""

from __future__ import annotations

from typing import Any, Callable

from aichat.store import messages, usage
from aichat.store.base import Transaction
from aichat.store.dialect import NOW
from aichat.store.usage import Usage

INTERRUPTED = "interrupted"  # a reply cut off by a crash: its text up to the last checkpoint
Row = tuple[int, int, int, str, str | None, int, int | None, str, str | None, bool]


async def save(tx: Transaction, rows: list[Row], instance: int = 0) -> None:
    """For each running round, (session_id, user_message_id, regenerate, model, provider,
    prompt_tokens, context_limit, new content, new reasoning, first): the head row, then the
    text since the last checkpoint appended. A round's first checkpoint replaces whatever an
    earlier round of the session left (one whose reply could not be saved)."""
    firsts = [(row[0],) for row in rows if row[9]]
    if firsts:
        await tx.executemany("DELETE FROM round_checkpoints WHERE session_id = ?", firsts)
    await tx.executemany(
        "INSERT INTO round_checkpoints (session_id, user_message_id, regenerate, model,"
        " provider, prompt_tokens, context_limit, instance_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        f" ON CONFLICT (session_id) DO UPDATE SET updated_at = {NOW},"
        " instance_id = excluded.instance_id", [(*row[:7], instance) for row in rows])
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
    every leftover, or only those of a dead `instance`."""
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
        text, message_id = row["content"].strip(), None
        if text:
            if row["regenerate"]:
                await messages.drop_replies_after(tx, row["session_id"],
                                                  row["user_message_id"])
            message_id = await messages.add(tx, row["session_id"], "assistant", text,
                                            status=INTERRUPTED,
                                            reasoning=row["reasoning"].strip() or None)
        completion = count_tokens(text) if text else 0
        await usage.add(tx, row["model"], row["provider"],
                        Usage(row["prompt_tokens"], completion,
                              row["prompt_tokens"] + completion, True),
                        status=INTERRUPTED, session_id=row["session_id"],
                        message_id=message_id, context_limit=row["context_limit"])
        row["message_id"] = message_id
    await tx.execute(f"DELETE FROM round_checkpoints{where}", params)
    return leftovers
