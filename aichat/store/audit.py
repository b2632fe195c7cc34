"""audit_log: security-relevant events (docs/api.md, "Audit log"), never a secret.

Every row is bounded: `target` and the actor's name at TEXT_CHARS characters, `address` at
ADDRESS_CHARS, and `detail`, a JSON object, at DETAIL_CHARS characters once serialised (its
strings are clipped shorter until it fits). Control characters become U+FFFD: PostgreSQL text
cannot hold NUL, and a log line should not hold a terminal escape. The sweep
(aichat/audit_sweep.py) deletes rows past the `audit_retention_days` setting.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from aichat.store.base import Reader, Transaction

# Snake-case names, one per kind of event; docs/api.md lists each with its target and detail.
ACTIONS = ("register", "login", "login_failed", "password_change", "role_change", "user_delete",
           "api_key_create", "api_key_revoke", "settings_change", "model_create",
           "model_update", "model_delete", "model_url_change", "limits_change", "backup",
           "rotate_key", "user_export")
ACTOR_TYPES = ("user", "api_key", "system", "anonymous")  # sql/013's CHECK

TEXT_CHARS = 200
ADDRESS_CHARS = 100  # an IPv6 address is at most 45; X-Forwarded-For may carry anything
DETAIL_CHARS = 2000
_ITEMS = 50  # entries kept of each object or list in a detail
_CLIPS = (TEXT_CHARS, 60, 16)  # each string's length in a detail, tried in turn until it fits
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a user (by a token or, `key_id`, an API key), the system (the command line)
    or an anonymous client (a failed sign-in); and from which client address."""

    type: str
    user_id: int | None = None
    key_id: int | None = None
    name: str | None = None
    address: str | None = None


SYSTEM = Actor("system")


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filters; bounds are ISO timestamps, both inclusive."""

    actor_user_id: int | None = None
    system: bool = False
    action: str | None = None
    start: str | None = None
    end: str | None = None


def clip(text: str, limit: int = TEXT_CHARS) -> str:
    text = _UNSAFE.sub("\ufffd", text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _optional(text: str | None, limit: int = TEXT_CHARS) -> str | None:
    return None if text is None else clip(text, limit)


def _clipped(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        return {clip(str(k), limit): _clipped(v, limit) for k, v in list(value.items())[:_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [_clipped(v, limit) for v in value[:_ITEMS]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clip(str(value), limit)


def detail_text(detail: dict[str, Any]) -> str:
    """`detail` as JSON of at most DETAIL_CHARS characters."""
    for limit in _CLIPS:
        text = json.dumps(_clipped(detail, limit), ensure_ascii=False, separators=(",", ":"))
        if len(text) <= DETAIL_CHARS:
            return text
    return '{"truncated":true}'


INSERT = ("INSERT INTO audit_log (actor_type, actor_user_id, actor_key_id, actor_name, address,"
          " action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def values(actor: Actor, action: str, target: str | None,
           detail: dict[str, Any] | None) -> tuple[Any, ...]:
    """INSERT's parameters, bounded."""
    if action not in ACTIONS or actor.type not in ACTOR_TYPES:
        raise ValueError(f"not an audit event: {actor.type} {action}")
    return (actor.type, actor.user_id, actor.key_id, _optional(actor.name),
            _optional(actor.address, ADDRESS_CHARS), action, _optional(target),
            detail_text(detail or {}))


async def add(tx: Transaction, actor: Actor, action: str, target: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
    """One event, committed with the rest of `tx` or not at all."""
    await tx.execute(INSERT, values(actor, action, target, detail))


def add_sqlite(conn: sqlite3.Connection, actor: Actor, action: str, target: str | None,
               detail: dict[str, Any] | None) -> bool:
    """The same on the command line's sqlite3 connection, in its current transaction; False
    (nothing written) on a database not yet migrated to sql/013."""
    present = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                           " AND name = 'audit_log'").fetchone()
    if present is None:
        return False
    conn.execute(INSERT, values(actor, action, target, detail))
    return True


_PUBLIC = ("id, created_at AS \"createdAt\", actor_type AS \"actorType\","
           " actor_user_id AS \"actorUserId\", actor_key_id AS \"actorKeyId\","
           " actor_name AS \"actorName\", address, action, target, detail")


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.system:
        # IS NULL first: the actor index holds the system's rows under NULL.
        clauses.append("actor_user_id IS NULL AND actor_type = 'system'")
    elif filters.actor_user_id is not None:
        clauses.append("actor_user_id = ?")
        params.append(filters.actor_user_id)
    if filters.action is not None:
        clauses.append("action = ?")
        params.append(filters.action)
    if filters.start is not None:
        clauses.append("created_at >= ?")
        params.append(filters.start)
    if filters.end is not None:
        clauses.append("created_at <= ?")
        params.append(filters.end)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


async def list_page(db: Reader, page: int, limit: int,
                    filters: Filters) -> tuple[list[dict[str, Any]], int]:
    """One page of the matching events, newest first, and how many match."""
    where, params = _where(filters)
    total = await db.value(f"SELECT COUNT(*) FROM audit_log {where}", params)
    rows = await db.all(
        f"SELECT {_PUBLIC} FROM audit_log {where} ORDER BY created_at DESC, id DESC"
        " LIMIT ? OFFSET ?", [*params, limit, (page - 1) * limit])
    for row in rows:
        row["detail"] = json.loads(row["detail"])
    return rows, total


async def delete_before(tx: Transaction, cutoff: str, batch: int) -> int:
    """Delete up to `batch` events older than `cutoff` (ISO); how many went."""
    return await tx.execute(
        "DELETE FROM audit_log WHERE id IN"
        " (SELECT id FROM audit_log WHERE created_at < ? LIMIT ?)", (cutoff, batch))
