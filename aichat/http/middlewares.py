"""Observation first (request id, metrics), errors next (everything becomes the envelope),
then auth (CORS rides on response signals)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from aichat.http.access import Handler, access_of
from aichat.store.base import Unavailable
from aichat.security.credentials import authenticate
from aichat.http.errors import ApiError, fail
from aichat.http.appkeys import metrics_key, user_key
from aichat.http import requestid

log = logging.getLogger(__name__)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"Route {request.method} {request.path} not found"
    if exc.status == 405:
        return f"Method {request.method} not allowed for {request.path}"
    if exc.status == 413:
        return "Request body too large"
    return exc.reason


DATABASE_AWAY = "The database is unavailable; try again in a few seconds"
UNMATCHED = "unmatched"  # a path no route has: never the path itself (metrics labels)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's id, set for its logs (and its rounds'), and its line in the metrics."""
    request_id = requestid.choose(request.headers.get(requestid.HEADER))
    request[requestid.request_id_key] = request_id
    token = requestid.current.set(request_id)
    metrics = request.config_dict.get(metrics_key)
    start, status = time.perf_counter(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client left before the answer
        raise
    finally:
        requestid.current.reset(token)
        if metrics is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None and \
                request.match_info.http_exception is None else UNMATCHED
            metrics.request(request.method, route, status, time.perf_counter() - start)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return fail(e.status, str(e), e.headers)
    except web.HTTPException as e:  # the router's 404/405, aiohttp's 413, CORS refusals
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return fail(e.status, _http_message(request, e), headers)
    except ConnectionResetError:
        raise  # the client left; nothing to answer
    except Unavailable:  # PostgreSQL restarting: the pool reconnects by itself
        log.warning("database unavailable: %s %s", request.method, request.path)
        return fail(503, DATABASE_AWAY, {"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error: %s %s", request.method, request.path)
        return fail(500, "Internal server error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None or request.method == "OPTIONS":
        return await handler(request)  # unknown route, or a CORS preflight
    access = access_of(match.handler)
    if access not in ("public", "v1"):  # /v1 has its own auth and error format
        user = await authenticate(request.app, request.headers.get("Authorization"))
        if access == "admin" and not user.is_admin:
            raise ApiError(403, "Admin access required")
        request[user_key] = user
    return await handler(request)
