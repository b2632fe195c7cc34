"""GET /api/openapi.json: the API description of aichat.http.openapi, public and not enveloped."""

from __future__ import annotations

import functools

from aiohttp import web

from aichat.http.access import public
from aichat.http.errors import json_response

routes = web.RouteTableDef()


@functools.cache
def _document() -> dict:
    # Imported on first use: the builder's code and the document cost ~0.5 MB of idle RSS,
    # for a route that clients rarely call. Built once: it is fixed for the process's life.
    from aichat.http import openapi
    return openapi.spec()


@routes.get("/api/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(_document())
