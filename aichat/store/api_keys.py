"""api_keys: personal keys for /v1 (their hash only), and what the /v1 requests used."""

from __future__ import annotations

from typing import Any

from aichat.store import usage
from aichat.store.base import Reader, Transaction, found
from aichat.store.dialect import NOW

_PUBLIC = ("id, name, prefix, created_at AS \"createdAt\", last_used_at AS \"lastUsedAt\","
           " expires_at AS \"expiresAt\", tokens_per_month AS \"tokensPerMonth\"")


async def create(tx: Transaction, user_id: int, name: str, prefix: str, key_hash: str,
                 expires_at: str | None, tokens_per_month: int | None = None) -> dict[str, Any]:
    key_id = await tx.insert(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, expires_at, tokens_per_month)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, name, prefix, key_hash, expires_at, tokens_per_month))
    return found(await tx.one(f"SELECT {_PUBLIC} FROM api_keys WHERE id = ?", (key_id,)))


async def count(db: Reader, user_id: int) -> int:
    return await db.value("SELECT COUNT(*) FROM api_keys WHERE user_id = ?", (user_id,))


async def list_for(db: Reader, user_id: int) -> list[dict[str, Any]]:
    return await db.all(f"SELECT {_PUBLIC} FROM api_keys WHERE user_id = ?"
                        " ORDER BY created_at DESC, id DESC", (user_id,))


async def delete(tx: Transaction, key_id: int, user_id: int) -> bool:
    return await tx.execute("DELETE FROM api_keys WHERE id = ? AND user_id = ?",
                            (key_id, user_id)) > 0


async def delete_for_user(tx: Transaction, user_id: int) -> int:
    return await tx.execute("DELETE FROM api_keys WHERE user_id = ?", (user_id,))


async def by_hash(db: Reader, key_hash: str) -> dict[str, Any] | None:
    return await db.one("SELECT id, user_id, expires_at, last_used_at, tokens_per_month"
                        " FROM api_keys"
                        " WHERE key_hash = ?", (key_hash,))


async def touch(tx: Transaction, key_id: int) -> None:
    await tx.execute(f"UPDATE api_keys SET last_used_at = {NOW} WHERE id = ?", (key_id,))


async def daily_usage(db: Reader, user_id: int, start: str, end: str) -> list[dict[str, Any]]:
    """What the user's /v1 requests used, per UTC day and model, oldest day first."""
    return await usage.daily(db, user_id, start, end, usage.Source.API, per_model=True)
