"""system_settings (key/value text, each row an admin's choice) and user_settings (one row per
user)."""

from __future__ import annotations

from typing import Any

from aichat.store.base import Reader, Transaction
from aichat.store.dialect import NOW


async def system_values(db: Reader) -> dict[str, str]:
    rows = await db.all("SELECT key, value FROM system_settings")
    return {r["key"]: r["value"] for r in rows}


async def set_system(tx: Transaction, values: dict[str, str]) -> None:
    for key, value in values.items():
        await tx.execute(
            "INSERT INTO system_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            f" SET value = excluded.value, updated_at = {NOW}",
            (key, value))


async def clear_system(tx: Transaction, keys: list[str]) -> None:
    """Forget an admin's values: those settings follow the environment or default again."""
    for key in keys:
        await tx.execute("DELETE FROM system_settings WHERE key = ?", (key,))


async def personal(db: Reader, user_id: int) -> dict[str, Any] | None:
    return await db.one(
        "SELECT context_token_limit, theme FROM user_settings WHERE user_id = ?", (user_id,))


async def set_personal(tx: Transaction, user_id: int, values: dict[str, Any]) -> None:
    columns = [c for c in ("context_token_limit", "theme") if c in values]
    if not columns:
        return
    await tx.execute(
        f"INSERT INTO user_settings (user_id, {', '.join(columns)})"
        f" VALUES (?, {', '.join('?' for _ in columns)})"
        f" ON CONFLICT (user_id) DO UPDATE SET"
        f" {', '.join(f'{c} = excluded.{c}' for c in columns)}, updated_at = {NOW}",
        (user_id, *(values[c] for c in columns)))
