"""users: accounts, roles and the counts the admin pages show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aichat.store.base import Reader, Transaction, found

_PUBLIC = "id, username, role, created_at AS \"createdAt\""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    token_version: int
    created_at: str
    # The admin's overrides of the system's default limits (None: the default), docs/api.md §9.
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    cost_per_month_micros: int | None = None
    max_concurrent_streams: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role}


_USER_COLS = ("id, username, role, token_version, created_at, requests_per_minute,"
              " tokens_per_day, tokens_per_month, cost_per_month_micros, max_concurrent_streams")


async def get(db: Reader, user_id: int) -> User | None:
    row = await db.one(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,))
    return User(**row) if row else None


async def get_with_hash(db: Reader, username: str) -> tuple[User, str] | None:
    if "\x00" in username:  # no account has one (registration refuses it); PostgreSQL
        return None  # would refuse the query itself
    row = await db.one(f"SELECT {_USER_COLS}, hashed_password FROM users WHERE username = ?",
                       (username,))
    if not row:
        return None
    hashed = row.pop("hashed_password")
    return User(**row), hashed


async def get_hash(db: Reader, user_id: int) -> str | None:
    return await db.value("SELECT hashed_password FROM users WHERE id = ?", (user_id,))


async def count(db: Reader) -> int:
    return await db.value("SELECT COUNT(*) FROM users")


async def exists(db: Reader, username: str) -> bool:
    return await db.one("SELECT 1 FROM users WHERE username = ?", (username,)) is not None


async def create(tx: Transaction, username: str, hashed: str, role: str) -> User:
    user_id = await tx.insert(
        "INSERT INTO users (username, hashed_password, role) VALUES (?, ?, ?)",
        (username, hashed, role))
    return found(await get(tx, user_id))


async def set_password(tx: Transaction, user_id: int, hashed: str) -> None:
    """Store the new hash and invalidate every token issued before it."""
    await tx.execute(
        "UPDATE users SET hashed_password = ?, token_version = token_version + 1 WHERE id = ?",
        (hashed, user_id))


async def admin_count(db: Reader) -> int:
    return await db.value("SELECT COUNT(*) FROM users WHERE role = 'ADMIN'")


async def set_role(tx: Transaction, user_id: int, role: str) -> None:
    await tx.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))


async def delete(tx: Transaction, user_id: int) -> None:
    """Sessions (with messages and usage), personal models and settings go by ON DELETE CASCADE.

    Sessions go first: they RESTRICT the deletion of a model they use, and the cascade from
    users would otherwise reach a personal model while a session still points at it.
    """
    await tx.execute("DELETE FROM chat_sessions WHERE user_id = ?", (user_id,))
    await tx.execute("DELETE FROM users WHERE id = ?", (user_id,))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_ADMIN_VIEW = f"""
    SELECT {_PUBLIC},
           (SELECT COUNT(*) FROM chat_sessions s WHERE s.user_id = users.id) AS "chatSessions",
           (SELECT COUNT(*) FROM model_configs m WHERE m.user_id = users.id) AS "modelConfigs"
    FROM users
"""


def _admin_shape(row: dict[str, Any]) -> dict[str, Any]:
    row["_count"] = {"chatSessions": row.pop("chatSessions"),
                     "modelConfigs": row.pop("modelConfigs")}
    return row


async def list_page(db: Reader, page: int, limit: int,
                    search: str | None) -> tuple[list[dict[str, Any]], int]:
    where, params = "", []
    if search:
        # lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
        where, params = ("WHERE lower(username) LIKE lower(?) ESCAPE '\\'",
                         [f"%{_escape_like(search)}%"])
    total = await db.value(f"SELECT COUNT(*) FROM users {where}", params)
    rows = await db.all(
        f"{_ADMIN_VIEW} {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit])
    return [_admin_shape(r) for r in rows], total


async def get_admin_view(db: Reader, user_id: int) -> dict[str, Any] | None:
    row = await db.one(f"{_ADMIN_VIEW} WHERE id = ?", (user_id,))
    return _admin_shape(row) if row else None


async def get_public(db: Reader, user_id: int) -> dict[str, Any] | None:
    return await db.one(f"SELECT {_PUBLIC} FROM users WHERE id = ?", (user_id,))
