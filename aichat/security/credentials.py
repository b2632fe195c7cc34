"""Who is calling: the one place a credential becomes a User.

Two credential forms share `identify`: the front end's JWT (every route) and a personal API
key `aic_...` (only routes that opt in: the OpenAI-compatible /v1 surface).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from typing import Any, Mapping

from aichat.http.errors import ApiError
from aichat.http.appkeys import db_key, tokens_key
from aichat.store import api_keys, users
from aichat.store.users import User
from aichat.timeutil import iso, now_iso

MISSING = "Missing or invalid authorization header"
INVALID = "Invalid or expired token"
KEY_PREFIX = "aic_"
_TOUCH_EVERY = timedelta(minutes=1)  # last-used time is kept to the minute, not per request


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise ApiError(401, MISSING)
    return header[7:].strip()


def hash_key(key: str) -> str:
    """Keys carry 256 random bits: a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    api_key_id: int | None = None
    key_tokens_per_month: int | None = None  # the key's own limit (docs/api.md §9)


async def identify(app: Mapping[Any, Any], header: str | None, *,
                   allow_keys: bool = False) -> Principal:
    """The user behind an `Authorization` header, re-read from the database every time."""
    credential = bearer(header)
    db = app[db_key]
    if credential.startswith(KEY_PREFIX):
        if not allow_keys:
            raise ApiError(401, INVALID)
        return await _by_key(db, credential)
    claims = app[tokens_key].verify(credential)
    if claims is None:
        raise ApiError(401, INVALID)
    user = await users.get(db.quick, claims.user_id)
    if user is None:
        raise ApiError(401, "User not found")
    if user.token_version != claims.token_version:
        raise ApiError(401, INVALID)  # issued before the last password change
    return Principal(user)


async def _by_key(db: Any, key: str) -> Principal:
    row = await api_keys.by_hash(db.quick, hash_key(key))
    if row is None:
        raise ApiError(401, "Invalid API key")
    now = now_iso()
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise ApiError(401, "API key expired")
    user = await users.get(db.quick, row["user_id"])
    if user is None:
        raise ApiError(401, "User not found")
    stale = iso(datetime.now(UTC) - _TOUCH_EVERY)
    if row["last_used_at"] is None or row["last_used_at"] < stale:
        await db.run(api_keys.touch, row["id"])
    return Principal(user, row["id"], row["tokens_per_month"])


async def authenticate(app: Mapping[Any, Any], header: str | None) -> User:
    return (await identify(app, header)).user
