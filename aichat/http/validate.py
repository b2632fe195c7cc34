"""Request parsing: JSON bodies, path and query ids, paging. Body fields: aichat.http.fields."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aichat.http import jsonfast
from aichat.http.errors import ApiError
from aichat.http.fields import MAX_SQL_INT, Id

MAX_PAGE = 1_000_000_000
_THREAD_PARSE_BYTES = 256 * 1024  # parsing a multi-MB image body would stall the loop
_ID = Id()
_READ_PIECE = 64 * 1024


async def read_capped(request: web.Request, max_size: int) -> bytes:
    """The whole body, or 413 past `max_size` bytes. Read in pieces and stopped at the cap: a
    chunked body has no length to check up front, and request.read() would take up to the
    app's own limit before this route's cap applies."""
    if request.content_length is not None and request.content_length > max_size:
        raise ApiError(413, "Request body too large")
    parts, size = [], 0
    async for piece in request.content.iter_chunked(_READ_PIECE):
        size += len(piece)
        if size > max_size:
            raise ApiError(413, "Request body too large")
        parts.append(piece)
    return b"".join(parts)


async def read_json(request: web.Request, max_size: int) -> dict[str, Any]:
    """The body as a JSON object, or 400 "Invalid JSON body"; 413 past `max_size` bytes."""
    raw = await read_capped(request, max_size)
    try:
        if len(raw) > _THREAD_PARSE_BYTES:
            body = await asyncio.to_thread(jsonfast.loads, raw)
        else:
            body = jsonfast.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "Invalid JSON body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON body")
    return body


def _decimal(text: str) -> int | None:
    # int() would also take "+1", " 1", "1_0" and non-ASCII digits.
    if not text or len(text) > 30 or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def path_id(request: web.Request, name: str, thing: str) -> int:
    """A positive id from the URL; one too large to exist reads as 0, which matches nothing."""
    value = _decimal(request.match_info[name])
    if value is None:
        raise ApiError(400, f"Invalid {thing} ID")
    return value if value <= MAX_SQL_INT else 0


def query_id(request: web.Request, name: str) -> int | None:
    """An optional id from the query string: absent or empty is None."""
    if not request.query.get(name):
        return None
    return required_query_id(request, name)


def required_query_id(request: web.Request, name: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        raise ApiError(400, f"Invalid {name}")
    value = _decimal(raw)
    if value is None or value == 0:
        raise ApiError(400, f"Invalid {name}")
    return value if value <= MAX_SQL_INT else 0


def paging(request: web.Request, default_limit: int, max_limit: int) -> tuple[int, int]:
    page = _query_int(request, "page", 1, 1, MAX_PAGE)
    limit = _query_int(request, "limit", default_limit, 1, max_limit)
    return page, limit


@dataclass(frozen=True, slots=True)
class Paging:
    """A list route's `page` and `limit` query parameters, declared once for the check and the
    OpenAPI document."""

    default_limit: int
    max_limit: int

    def read(self, request: web.Request) -> tuple[int, int]:
        return paging(request, self.default_limit, self.max_limit)


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = _decimal(raw)
    if value is None or not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}")
    return value


def pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}


def body_id(body: dict, name: str) -> int:
    """A positive JSON integer id (no strings, fractions or booleans)."""
    return _ID.read(name, body)
