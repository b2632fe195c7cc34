"""One exception for expected failures and the two response shapes of api.md."""

from __future__ import annotations

import json
from typing import Any, Mapping

from aiohttp import web


class ApiError(Exception):
    """An expected failure: becomes {"success": false, "error": message, "data": null}."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ok(data: Any = None, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if message:
        body["message"] = message
    return web.Response(text=dumps(body), content_type="application/json")


def fail(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers, content_type="application/json",
                        text=dumps({"success": False, "error": message, "data": None}))


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")
