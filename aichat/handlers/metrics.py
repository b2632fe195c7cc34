"""GET /metrics: the Prometheus exposition (docs/operations.md §9).

Public to the auth middleware, guarded here: with METRICS_TOKEN set, that bearer token from
anywhere; without it, only a client on this machine that no proxy forwarded (a proxy on this
machine must not hand the figures to the internet). METRICS_ENABLED=false: 404.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from aichat.http.access import public
from aichat.http.appkeys import config_key, metrics_key
from aichat.http.errors import ApiError
from aichat.metrics.catalog import connections_of

routes = web.RouteTableDef()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FORWARDED = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _loopback(request: web.Request) -> bool:
    if any(name in request.headers for name in _FORWARDED):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # a Unix socket peer: no address to trust


def _check_access(request: web.Request) -> None:
    token = request.app[config_key].metrics_token
    if token is None:
        if not _loopback(request):
            raise ApiError(403, "Metrics are served to this machine only; set METRICS_TOKEN "
                                "to read them from elsewhere")
        return
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "Metrics need the METRICS_TOKEN bearer token",
                       {"WWW-Authenticate": 'Bearer realm="metrics"'})


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    collected = request.app.get(metrics_key)
    if collected is None:
        raise ApiError(404, "Metrics are off (METRICS_ENABLED=false)")
    _check_access(request)
    collected.connections = connections_of(request)
    return web.Response(body=collected.render().encode(), headers={"Content-Type": CONTENT_TYPE})
