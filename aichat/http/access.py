"""Route access marks: every route needs a signed-in user unless marked otherwise.

The auth middleware reads the mark (default-deny); `/v1` routes carry their own authentication.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def public(handler: Handler) -> Handler:
    handler.access = "public"  # type: ignore[attr-defined]
    return handler


def admin_only(handler: Handler) -> Handler:
    handler.access = "admin"  # type: ignore[attr-defined]
    return handler


def api_key_ok(handler: Handler) -> Handler:
    """A route of the /v1 surface: its own middleware authenticates, keys accepted."""
    handler.access = "v1"  # type: ignore[attr-defined]
    return handler


def access_of(handler: Handler) -> str:
    return getattr(handler, "access", "user")
