"""One exception for expected failures and the two response shapes (docs/api.md §1)."""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from aichat.http import jsonfast


class ApiError(Exception):
    """An expected failure: becomes {"success": false, "error": message, "data": null}."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def json_response(body: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers, body=jsonfast.dumps(body),
                        content_type="application/json", charset="utf-8")


def ok(data: Any = None, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if message:
        body["message"] = message
    return json_response(body)


def fail(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"success": False, "error": message, "data": None}, status, headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")
