"""A lean access log line: aiohttp's default formatter walks a parsed format per request and
showed as 2.5 % of a chat round's CPU; this writes the fields that matter, path without query."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from aichat.http.requestid import request_id_key


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # Logged after the request's context is gone: its id comes with the record.
        self.logger.info('%s "%s %s" %s %s %.1fms', request.remote, request.method, request.path,
                         response.status, response.body_length, time * 1000,
                         extra={"request_id": request.get(request_id_key)})
