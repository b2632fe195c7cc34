"""model_configs: personal (user_id set) and system (user_id NULL) provider configurations.

The API key column holds only ciphertext bound to the row id; it never leaves this module
except decrypted, for the upstream call.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from aichat.security.crypto import DecryptError, KeyCipher, model_aad
from aichat.store import prices
from aichat.store.base import Reader, Transaction, found

_COLUMNS = ("id, user_id AS \"userId\", name, api_url AS \"apiUrl\", '' AS \"apiKey\","
            " supports_images AS \"supportsImages\", created_at AS \"createdAt\","
            " input_price_micros, output_price_micros")
_NEWEST = "ORDER BY created_at DESC, id DESC"


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    row["supportsImages"] = bool(row["supportsImages"])
    row["inputPricePerMTok"] = prices.from_micros(row.pop("input_price_micros"))
    row["outputPricePerMTok"] = prices.from_micros(row.pop("output_price_micros"))
    return row


async def list_visible(db: Reader, user_id: int) -> dict[str, list[dict[str, Any]]]:
    rows = await db.all(
        f"SELECT {_COLUMNS} FROM model_configs WHERE user_id = ? OR user_id IS NULL {_NEWEST}",
        (user_id,))
    personal = [_shape(r) for r in rows if r["userId"] is not None]
    system = [_shape(r) for r in rows if r["userId"] is None]
    return {"personal": personal, "system": system}


async def visible_id(db: Reader, user_id: int, name: str) -> int | None:
    """The id of the model the user means by `name`: their own, else the system one."""
    return await db.value(
        "SELECT id FROM model_configs WHERE name = ? AND (user_id = ? OR user_id IS NULL)"
        " ORDER BY user_id IS NULL LIMIT 1", (name, user_id))


async def list_system_with_counts(db: Reader) -> list[dict[str, Any]]:
    rows = await db.all(
        f"SELECT {_COLUMNS}, (SELECT COUNT(*) FROM chat_sessions s"
        f" WHERE s.model_config_id = model_configs.id) AS \"chatSessions\""
        f" FROM model_configs WHERE user_id IS NULL {_NEWEST}")
    for row in rows:
        row["_count"] = {"chatSessions": row.pop("chatSessions")}
    return [_shape(r) for r in rows]


async def get_visible(db: Reader, model_id: int, user_id: int) -> dict[str, Any] | None:
    """A model the user may read and chat with: their own or a system one."""
    row = await db.one(f"SELECT {_COLUMNS} FROM model_configs"
                       f" WHERE id = ? AND (user_id = ? OR user_id IS NULL)", (model_id, user_id))
    return _shape(row) if row else None


async def get_owned(db: Reader, model_id: int, owner_id: int | None) -> dict[str, Any] | None:
    """A model the caller may change: personal ones by `owner_id`, system ones with None."""
    owner, params = _owner(owner_id)
    row = await db.one(f"SELECT {_COLUMNS} FROM model_configs WHERE id = ? AND {owner}",
                       (model_id, *params))
    return _shape(row) if row else None


async def count_personal(db: Reader, user_id: int) -> int:
    return await db.value("SELECT COUNT(*) FROM model_configs WHERE user_id = ?", (user_id,))


async def name_taken(db: Reader, owner_id: int | None, name: str,
                     except_id: int | None = None) -> bool:
    owner, params = _owner(owner_id)
    other = " AND id <> ?" if except_id is not None else ""
    row = await db.one(f"SELECT 1 FROM model_configs WHERE {owner} AND name = ?{other}",
                       (*params, name, *((except_id,) if except_id is not None else ())))
    return row is not None


def _owner(owner_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The condition for "owned by": `user_id IS ?` with a NULL is SQLite's alone."""
    return ("user_id IS NULL", ()) if owner_id is None else ("user_id = ?", (owner_id,))


async def create(tx: Transaction, cipher: KeyCipher, owner_id: int | None, name: str,
                 api_url: str, api_key: str, supports_images: bool,
                 price: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """`price`: per million (prompt, completion) tokens, each None if not set."""
    # The ciphertext is bound to the row id, which exists only after the insert.
    model_id = await tx.insert(
        "INSERT INTO model_configs (user_id, name, api_url, api_key, supports_images,"
        " input_price_micros, output_price_micros) VALUES (?, ?, ?, '', ?, ?, ?)",
        (owner_id, name, api_url, int(supports_images), *map(_micros, price)))
    await tx.execute("UPDATE model_configs SET api_key = ? WHERE id = ?",
                     (cipher.encrypt(api_key, model_aad(model_id)), model_id))
    return found(await get_owned(tx, model_id, owner_id))


def _micros(price: float | None) -> int | None:
    return None if price is None else prices.to_micros(price)


async def update(tx: Transaction, cipher: KeyCipher, model_id: int,
                 changes: dict[str, Any]) -> None:
    """`changes` by field name; a price given as None is removed."""
    columns = {"name": "name", "apiUrl": "api_url", "supportsImages": "supports_images",
               "inputPricePerMTok": "input_price_micros",
               "outputPricePerMTok": "output_price_micros"}
    sets, params = [], []
    for field, column in columns.items():
        if field in changes:
            sets.append(f"{column} = ?")
            value = changes[field]
            if field == "supportsImages":
                value = int(value)
            elif column.endswith("_micros"):
                value = _micros(value)
            params.append(value)
    if "apiKey" in changes:
        sets.append("api_key = ?")
        params.append(cipher.encrypt(changes["apiKey"], model_aad(model_id)))
    if sets:
        await tx.execute(f"UPDATE model_configs SET {', '.join(sets)} WHERE id = ?",
                         (*params, model_id))


async def sessions_using(db: Reader, model_id: int) -> int:
    return await db.value("SELECT COUNT(*) FROM chat_sessions WHERE model_config_id = ?",
                          (model_id,))


async def delete(tx: Transaction, model_id: int) -> None:
    await tx.execute("DELETE FROM model_configs WHERE id = ?", (model_id,))


_FOR_ROUND = ("SELECT m.id, m.user_id, m.name, m.api_url, m.api_key, m.supports_images,"
              " m.input_price_micros, m.output_price_micros FROM model_configs m")


async def for_round(db: Reader, model_id: int) -> dict[str, Any] | None:
    """What a round needs to call the provider; `api_key` still encrypted."""
    return _for_round(await db.one(f"{_FOR_ROUND} WHERE m.id = ?", (model_id,)))


async def of_session(db: Reader, session_id: int, user_id: int) -> dict[str, Any] | None:
    """`for_round` of the model an owned session uses, in one read (None: no such session
    of this user; a session's model cannot be deleted while the session uses it)."""
    return _for_round(await db.one(
        f"{_FOR_ROUND} JOIN chat_sessions s ON s.model_config_id = m.id"
        " WHERE s.id = ? AND s.user_id = ?", (session_id, user_id)))


def _for_round(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["supports_images"] = bool(row["supports_images"])
    return row


def decrypt_key(cipher: KeyCipher, row: dict[str, Any]) -> str:
    """The row's API key in clear (raises DecryptError)."""
    return cipher.decrypt(row["api_key"], model_aad(row["id"]))


async def upstream(db: Reader, cipher: KeyCipher, model_id: int, *,
                   strict: bool = True) -> dict[str, Any] | None:
    """`for_round` with the key decrypted. A key that does not decrypt raises DecryptError,
    or with `strict=False` is replaced by that error, for the round to report it."""
    return with_key(cipher, await for_round(db, model_id), strict)


def with_key(cipher: KeyCipher, row: dict[str, Any] | None,
             strict: bool = True) -> dict[str, Any] | None:
    """A `for_round` row with its key decrypted (see `upstream`)."""
    if row is not None:
        try:
            row["api_key"] = decrypt_key(cipher, row)
        except DecryptError as e:
            if strict:
                raise
            row["api_key"] = e
    return row


# For `rotate-key`, on a plain sqlite3 connection (no server, no event loop).

def stored_keys(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(id, encrypted key) of every model config, by id."""
    cursor = conn.execute("SELECT id, api_key FROM model_configs ORDER BY id")
    return [(row[0], row[1]) for row in cursor.fetchall()]


def replace_keys(conn: sqlite3.Connection, updates: list[tuple[str, int]]) -> None:
    """Store (new encrypted key, id) pairs, inside the caller's transaction."""
    conn.executemany("UPDATE model_configs SET api_key = ? WHERE id = ?", updates)
