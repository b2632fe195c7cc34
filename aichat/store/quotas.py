"""What the quotas are checked against (docs/api.md §9), and the check itself.

Counts live in the database, never only in memory, so every instance sharing PostgreSQL sees
the same numbers: tokens and cost per user and UTC day (`quota_days`, kept by a trigger in the
commit that stores each usage row), requests in the current UTC minute (`quota_minutes`), and
the prompts of rounds in flight (`quota_holds`). `admit` reads them and, if the request fits,
counts it and takes its hold, in one transaction serialised per user (store/base.py
`serialise`), so two requests can never both take the last of a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from aichat.store.base import Reader, Transaction, found

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC calendar periods a moment falls in, as the stored texts compare."""

    minute: str  # YYYY-MM-DDTHH:MM
    day: str  # YYYY-MM-DD
    month_start: str  # YYYY-MM-01
    next_month: str  # the first day of the next month


@dataclass(frozen=True, slots=True)
class Ask:
    """Who asks (the key, 0 for none), to count a request (`request`), and to hold
    `tokens` and `cost_nanos` while it runs (`hold`)."""

    user_id: int
    api_key_id: int
    tokens: int
    cost_nanos: int
    request: bool = False
    hold: bool = False
    instance: int = 0


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's (and key's) use in the current periods: stored, and held by rounds in flight."""

    requests: int
    day_tokens: int
    month_tokens: int
    month_cost_nanos: int
    key_month_tokens: int
    held_tokens: int
    held_cost_nanos: int
    key_held_tokens: int


def _sum(column: str, where: str) -> str:
    return f"(SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM {where})"


_MONTH = "quota_days WHERE user_id = ? AND day >= ? AND day < ?"
_STANDING = (
    "SELECT (SELECT requests FROM quota_minutes WHERE user_id = ? AND minute = ?) AS requests,"
    f" {_sum('tokens', 'quota_days WHERE user_id = ? AND day = ?')} AS day_tokens,"
    f" {_sum('tokens', _MONTH)} AS month_tokens,"
    f" {_sum('cost_nanos', _MONTH)} AS month_cost_nanos,"
    f" {_sum('tokens', _MONTH + ' AND api_key_id = ?')} AS key_month_tokens,"
    f" {_sum('tokens', 'quota_holds WHERE user_id = ?')} AS held_tokens,"
    f" {_sum('cost_nanos', 'quota_holds WHERE user_id = ?')} AS held_cost_nanos,"
    f" {_sum('tokens', 'quota_holds WHERE user_id = ? AND api_key_id = ?')} AS key_held_tokens")


async def standing(db: Reader, user_id: int, api_key_id: int, at: Periods) -> Standing:
    month = (user_id, at.month_start, at.next_month)
    row = found(await db.one(_STANDING, (
        user_id, at.minute, user_id, at.day, *month, *month, *month, api_key_id,
        user_id, user_id, user_id, api_key_id)))
    row["requests"] = row["requests"] or 0
    return Standing(**{k: int(v) for k, v in row.items()})


async def admit(tx: Transaction, ask: Ask, at: Periods,
                refuse: Callable[[Standing], T | None]) -> tuple[Standing, T | None, int | None]:
    """A store job: the standing; `refuse(standing)`'s verdict (None: admitted); and, when
    admitted, the request counted and the hold's id (if `ask.hold`)."""
    await tx.serialise(ask.user_id)
    now = await standing(tx, ask.user_id, ask.api_key_id, at)
    verdict = refuse(now)
    if verdict is not None:
        return now, verdict, None
    if ask.request:
        await tx.execute(
            "INSERT INTO quota_minutes (user_id, minute, requests) VALUES (?, ?, 1)"
            " ON CONFLICT (user_id) DO UPDATE SET requests = CASE WHEN quota_minutes.minute ="
            " excluded.minute THEN quota_minutes.requests + 1 ELSE 1 END,"
            " minute = excluded.minute", (ask.user_id, at.minute))
    hold_id = None
    if ask.hold:
        hold_id = await tx.insert(
            "INSERT INTO quota_holds (user_id, api_key_id, instance_id, tokens, cost_nanos)"
            " VALUES (?, ?, ?, ?, ?)",
            (ask.user_id, ask.api_key_id, ask.instance, ask.tokens, ask.cost_nanos))
    return now, None, hold_id


async def release(tx: Transaction, hold_id: int) -> None:
    await tx.execute("DELETE FROM quota_holds WHERE id = ?", (hold_id,))


async def clear_holds(tx: Transaction, instance: int = 0) -> int:
    """Holds left by a process that ended without releasing them (SQLite, at start)."""
    return await tx.execute("DELETE FROM quota_holds WHERE instance_id = ?", (instance,))


LIMIT_COLUMNS = ("requests_per_minute", "tokens_per_day", "tokens_per_month",
                 "cost_per_month_micros", "max_concurrent_streams")


async def overrides(db: Reader, user_id: int) -> dict[str, Any] | None:
    """A user's own limits (None each: the system default); None if no such user."""
    return await db.one(f"SELECT {', '.join(LIMIT_COLUMNS)} FROM users WHERE id = ?",
                        (user_id,))


async def set_overrides(tx: Transaction, user_id: int, values: dict[str, Any]) -> bool:
    """Set some of a user's limits (None: back to the default); whether the user exists."""
    if not values:
        return await tx.value("SELECT 1 FROM users WHERE id = ?", (user_id,)) is not None
    assignments = ", ".join(f"{column} = ?" for column in values)
    return await tx.execute(f"UPDATE users SET {assignments} WHERE id = ?",
                            (*values.values(), user_id)) > 0
