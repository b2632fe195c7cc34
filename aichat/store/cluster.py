"""SQL of the coordination tables several instances share (sql/postgres/002_cluster.sql).

PostgreSQL only. Liveness is PostgreSQL's own: each instance holds the advisory lock
(INSTANCE, its number) on its coordination connection, so the lock is free exactly when that
connection, or the process, is gone. `pg_try_advisory_xact_lock` on it, inside a
transaction, therefore asks "is this instance dead?" and forgets the answer at commit.
"""

from __future__ import annotations

from typing import Any

from aichat.store.base import Reader, Transaction, found

INSTANCE = 1  # advisory lock class: (INSTANCE, instance number)
CHANNEL = "aichat"  # LISTEN/NOTIFY: chat/cluster.py

_DEAD = "instance_id <> ? AND pg_try_advisory_xact_lock(1, instance_id)"


async def purge_dead(tx: Transaction, me: int, column: str = "", value: int = 0) -> int:
    """Forget the rounds of dead instances (all, or one user's or session's); how many."""
    where = f"{column} = ? AND " if column else ""
    params = (value, me) if column else (me,)
    return await tx.execute(f"DELETE FROM live_rounds WHERE {where}{_DEAD}", params)


async def claim(db: Reader, me: int, user_id: int, session_id: int | None,
                limit: int) -> tuple[int | None, bool]:
    """Count the user's rounds on every live instance and take a slot if one is free (the
    function aichat_claim, sql/postgres/003_claim_function.sql): (the slot's id or None,
    whether another instance runs a round of the session)."""
    row = found(await db.one("SELECT claim_id, elsewhere FROM aichat_claim(?, ?, ?, ?)",
                             (me, user_id, session_id, limit)))
    return row["claim_id"], row["elsewhere"]


async def rounds_of(db: Reader, user_id: int) -> int:
    return int(await db.value("SELECT COUNT(*) FROM live_rounds WHERE user_id = ?", (user_id,)))


async def release(tx: Transaction, claim_id: int) -> None:
    await tx.execute("DELETE FROM live_rounds WHERE id = ?", (claim_id,))


async def end(db: Reader, claim_id: int | None, session_id: int | None,
              guard: tuple[int, int | None, str | None] | None, message: str | None) -> None:
    """A round here ended, in one statement (one commit): free its slot; record how a streamed
    round ended, for the post-abort guard (`guard` = user message, reply, cancel reason);
    announce `message` on the channel to whoever waits for the session."""
    user_message_id, reply_id, reason = guard if guard is not None else (None, None, None)
    await db.value(
        "WITH freed AS (DELETE FROM live_rounds WHERE id = ?), noted AS ("
        " INSERT INTO round_ends (session_id, user_message_id, assistant_message_id, reason,"
        " ended_at, guard_used) SELECT CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT),"
        " CAST(? AS TEXT), extract(epoch FROM clock_timestamp()), 0"
        " WHERE CAST(? AS BOOLEAN) ON CONFLICT (session_id) DO UPDATE SET"
        " user_message_id = excluded.user_message_id,"
        " assistant_message_id = excluded.assistant_message_id, reason = excluded.reason,"
        " ended_at = excluded.ended_at, guard_used = 0)"
        " SELECT pg_notify(?, CAST(? AS TEXT)) WHERE CAST(? AS TEXT) IS NOT NULL",
        (claim_id, session_id, user_message_id, reply_id, reason, guard is not None,
         CHANNEL, message, message))


async def running_elsewhere(tx: Transaction, me: int, column: str, value: int) -> bool:
    """Whether a live instance other than this one runs a round of this session or user."""
    await purge_dead(tx, me, column, value)
    return await tx.value(f"SELECT 1 FROM live_rounds WHERE {column} = ? AND instance_id <> ?"
                          " LIMIT 1", (value, me)) is not None


async def take_guard(tx: Transaction, session_id: int, content: str, reasons: tuple[str, ...],
                     window_s: float) -> dict[str, Any] | None:
    """The session's latest streamed round if a re-send of `content` duplicates it: ended
    within `window_s` for one of `reasons`, not used by a guard before (now it is)."""
    marks = ", ".join("?" for _ in reasons)
    return await tx.one(
        "UPDATE round_ends SET guard_used = 1 WHERE session_id = ? AND guard_used = 0"
        f" AND reason IN ({marks})"
        " AND ended_at > extract(epoch FROM clock_timestamp()) - CAST(? AS DOUBLE PRECISION)"
        " AND EXISTS (SELECT 1 FROM messages m WHERE m.id = round_ends.user_message_id"
        " AND m.content = ?) RETURNING user_message_id, assistant_message_id",
        (session_id, *reasons, window_s, content))


async def sweep(tx: Transaction, me: int, drained_after_s: float) -> None:
    """Housekeeping: dead instances' slots and quota holds, guard rows past their window,
    sign-in failure counts drained long ago (the table's bound: keys seen in the last
    `drained_after_s`)."""
    await purge_dead(tx, me)
    await tx.execute(f"DELETE FROM quota_holds WHERE {_DEAD}", (me,))
    await tx.execute("DELETE FROM round_ends"
                     " WHERE ended_at < extract(epoch FROM clock_timestamp()) - 60")
    await tx.execute("DELETE FROM login_failures WHERE at < extract(epoch FROM"
                     " clock_timestamp()) - CAST(? AS DOUBLE PRECISION)", (drained_after_s,))


async def is_dead(tx: Transaction, instance: int) -> bool:
    return bool(await tx.value("SELECT pg_try_advisory_xact_lock(1, ?)", (instance,)))
