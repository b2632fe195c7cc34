"""Public service routes: health, app info, and the route index at / and /api."""

from __future__ import annotations

import logging

from aiohttp import web

from aichat import __version__
from aichat.http.access import public
from aichat.metrics import process
from aichat.http.errors import json_response, ok
from aichat.http.appkeys import config_key, db_key, registry_key
from aichat.timeutil import now_iso

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

def _unhealthy(reason: str) -> web.Response:
    return json_response({"success": False, "error": "Service is unhealthy",
                          "data": {"status": "unhealthy", "timestamp": now_iso(),
                                   "error": reason}}, 503)


@routes.get("/api/settings/health")
@routes.get("/api/health")
@public
async def health(request: web.Request) -> web.Response:
    try:
        await request.app[db_key].ping()
    except Exception as e:  # a health check reports faults instead of raising them
        log.warning("health check: database unavailable: %s", e)
        return _unhealthy("database unavailable")
    write_error = request.app[db_key].write_error
    if write_error is not None:  # reads work, but no round could be saved
        return _unhealthy(f"database not writable: {write_error}")
    cluster = request.app[registry_key].cluster
    if cluster is not None and not cluster.joined:  # it refuses new rounds meanwhile
        return _unhealthy("rejoining the other instances")
    return ok({"status": "healthy", "timestamp": now_iso(), "version": __version__,
               "database": "connected", "memory": {"rss": process.rss_bytes()}})


@routes.get("/api/settings/app-info")
@public
async def app_info(request: web.Request) -> web.Response:
    mode = request.app[config_key].app_mode
    return ok({"name": "aichat", "version": __version__, "mode": mode,
               "features": {"registration": mode == "multi", "streaming": True,
                            "file_upload": False, "long_term_memory": False}})


@routes.get("/")
@routes.get("/api")
@public
async def index(request: web.Request) -> web.Response:
    seen, listed = set(), []
    for route in request.app.router.routes():
        info = route.resource.canonical if route.resource else ""
        entry = f"{route.method} {info}"
        if route.method not in ("HEAD", "OPTIONS") and entry not in seen:
            seen.add(entry)
            listed.append(entry)
    return ok({"name": "aichat", "version": __version__, "routes": listed})
