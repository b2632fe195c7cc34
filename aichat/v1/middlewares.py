"""Errors in OpenAI's format, and authentication by API key or JWT (the same `identify`)."""

from __future__ import annotations

import logging

from aiohttp import web

from aichat.http.access import Handler
from aichat.http.middlewares import DATABASE_AWAY
from aichat.store.base import Unavailable
from aichat.security.credentials import identify
from aichat.http.errors import ApiError, json_response
from aichat.http.appkeys import user_key

log = logging.getLogger(__name__)

api_key_id_key = web.RequestKey("api_key_id", int)
api_key_tokens_key = web.RequestKey("api_key_tokens", int)  # the key's monthly token limit

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def openai_error(status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": _TYPES.get(status, "api_error"),
                      "param": None, "code": code or _CODES.get(status)}}
    return json_response(body, status, headers)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        code = "model_not_found" if e.status == 404 and "model" in str(e).lower() else None
        return openai_error(e.status, str(e), code, dict(e.headers or {}))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return openai_error(e.status, e.reason)
    except ConnectionResetError:
        raise
    except Unavailable:
        log.warning("database unavailable: %s %s", request.method, request.path)
        return openai_error(503, DATABASE_AWAY, headers={"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error: %s %s", request.method, request.path)
        return openai_error(500, "Internal server error")


@web.middleware
async def openai_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is None:
        principal = await identify(request.config_dict, request.headers.get("Authorization"),
                                   allow_keys=True)
        request[user_key] = principal.user
        if principal.api_key_id is not None:
            request[api_key_id_key] = principal.api_key_id
        if principal.key_tokens_per_month is not None:
            request[api_key_tokens_key] = principal.key_tokens_per_month
    return await handler(request)
