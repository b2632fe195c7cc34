"""GET /api/openapi.json: the API description of aichat.openapi, public and not enveloped."""

from __future__ import annotations

import functools

from aiohttp import web

from .. import openapi
from ..auth import public
from ..errors import json_response

routes = web.RouteTableDef()


@functools.cache
def _document() -> dict:
    return openapi.spec()  # fixed for the life of the process: build it once


@routes.get("/api/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(_document())
