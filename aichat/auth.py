"""Who is calling: the one place a credential becomes a User, and the route access marks."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from .errors import ApiError
from .keys import db_key, tokens_key
from .store import users
from .store.users import User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MISSING = "Missing or invalid authorization header"
INVALID = "Invalid or expired token"


def public(handler: Handler) -> Handler:
    handler.access = "public"  # type: ignore[attr-defined]
    return handler


def admin_only(handler: Handler) -> Handler:
    handler.access = "admin"  # type: ignore[attr-defined]
    return handler


def access_of(handler: Handler) -> str:
    return getattr(handler, "access", "user")


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise ApiError(401, MISSING)
    return header[7:].strip()


async def authenticate(app: web.Application, header: str | None) -> User:
    """The user behind an `Authorization` header, re-read from the database every time."""
    claims = app[tokens_key].verify(bearer(header))
    if claims is None:
        raise ApiError(401, INVALID)
    user = await users.get(app[db_key].quick, claims.user_id)
    if user is None:
        raise ApiError(401, "User not found")
    if user.token_version != claims.token_version:
        raise ApiError(401, INVALID)  # issued before the last password change
    return user
