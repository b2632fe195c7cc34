"""CORS as docs/api.md §1 describes it, on aiohttp-cors.

aiohttp-cors answers preflights and adds headers on prepare (so errors and SSE get them too), but
it always echoes the request's Origin. `_contract_headers` runs after it and applies our rules: `*`
without credentials for the wildcard, `Vary: Origin` for a list, the full method list.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import hdrs, web

from aichat.settings.config import Config

METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
HEADERS = ("Content-Type", "Authorization", "Cache-Control")


def setup_cors(app: web.Application, config: Config) -> None:
    if not config.enable_cors:
        return
    origins = [o.strip() for o in config.cors_origin.split(",") if o.strip()] or ["*"]
    wildcard = "*" in origins
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=not wildcard, allow_headers=HEADERS, allow_methods=METHODS,
        max_age=600)
    cors = aiohttp_cors.setup(app, defaults={"*": options} if wildcard
                              else {origin: options for origin in origins})
    for route in list(app.router.routes()):
        cors.add(route)

    async def _contract_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not wildcard:
            response.headers.add(hdrs.VARY, "Origin")
        if hdrs.ACCESS_CONTROL_ALLOW_ORIGIN not in response.headers:
            return
        if wildcard:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*"
        if hdrs.ACCESS_CONTROL_ALLOW_METHODS in response.headers:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(METHODS)

    app.on_response_prepare.append(_contract_headers)
