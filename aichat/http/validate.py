"""Request parsing: JSON bodies, path ids, paging, and typed fields whose messages name them."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from aichat.http import jsonfast
from aichat.http.errors import ApiError

MAX_SQL_INT = 2**63 - 1
_THREAD_PARSE_BYTES = 256 * 1024  # parsing a multi-MB image body would stall the loop




async def read_json(request: web.Request, max_size: int) -> dict[str, Any]:
    """The body as a JSON object, or 400 "Invalid JSON body"; 413 past `max_size` bytes."""
    if request.content_length is not None and request.content_length > max_size:
        raise ApiError(413, "Request body too large")
    raw = await request.read()
    if len(raw) > max_size:
        raise ApiError(413, "Request body too large")
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


def query_id(request: web.Request, name: str, *, required: bool) -> int | None:
    raw = request.query.get(name)
    if raw is None or (raw == "" and not required):
        if required:
            raise ApiError(400, f"Invalid {name}")
        return None
    value = _decimal(raw)
    if value is None or value == 0:
        raise ApiError(400, f"Invalid {name}")
    return value if value <= MAX_SQL_INT else 0


def paging(request: web.Request, default_limit: int, max_limit: int) -> tuple[int, int]:
    page = _query_int(request, "page", 1, 1, 1_000_000_000)
    limit = _query_int(request, "limit", default_limit, 1, max_limit)
    return page, limit


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


# Body fields. `message` overrides the generic text where api.md fixes the wording.

def string(body: dict, name: str, *, required: bool = True, min_len: int = 1,
           max_len: int | None = None, blank_ok: bool = False,
           message: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, message or f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, message or f"{name} must be a string")
    if len(value) < min_len or (max_len is not None and len(value) > max_len) or (
            not blank_ok and not value.strip()):
        if message:
            raise ApiError(400, message)
        span = f"{min_len}-{max_len}" if max_len is not None else f"at least {min_len}"
        blank = "" if blank_ok else " and not blank"
        raise ApiError(400, f"{name} must be {span} characters{blank}")
    return value


def boolean(body: dict, name: str, *, required: bool = False) -> bool | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def integer(body: dict, name: str, *, lo: int, hi: int, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if type(value) is not int or not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}")
    return value


def body_id(body: dict, name: str) -> int:
    """A positive JSON integer id (no strings, fractions or booleans)."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"{name} is required")
    if type(value) is float and value.is_integer() and value > MAX_SQL_INT:
        return 0  # orjson reads integers past 64 bits as floats: too large to exist anyway
    if type(value) is not int or value < 1:
        raise ApiError(400, f"{name} must be a positive integer")
    return value if value <= MAX_SQL_INT else 0


def choice(body: dict, name: str, choices: tuple[str, ...], *,
           required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if value not in choices:
        raise ApiError(400, f"{name} must be one of: {', '.join(choices)}")
    return value
