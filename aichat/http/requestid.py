"""Request ids: every response carries `X-Request-Id`, every log line of its request too.

The id is the client's (or its proxy's) `X-Request-Id` when that is a sane token, else a new
one. It lives in a context variable for the request's task; a round's task is created inside
the request, so it inherits the id, and the round's log lines carry it to its end, even after
its client left (docs/operations.md §9).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
from datetime import datetime, UTC

from aiohttp import web

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
request_id_key = web.RequestKey("request_id", str)
current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def choose(header: str | None) -> str:
    """The client's id if sane (a token of at most 128 characters), else a new one."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return secrets.token_hex(8)


async def add_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: streams and errors get the header as well."""
    request_id = request.get(request_id_key)
    if request_id is not None:
        response.headers[HEADER] = request_id


class Stamp(logging.Filter):
    """Gives each record its request's id (None outside a request), unless it has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(
                     timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def handler(log_format: str) -> logging.Handler:
    """The root handler: stderr, the chosen format, request ids stamped."""
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    out.addFilter(Stamp())
    return out
