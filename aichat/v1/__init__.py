"""The OpenAI-compatible surface (/v1): any OpenAI client or SDK, on aichat's models and rules.

A sub-application with its own middlewares, because its errors use OpenAI's shape
(`{"error": {"message", "type", "code"}}`) and it accepts personal API keys as well as JWTs.
"""

from __future__ import annotations

from aiohttp import web

from aichat.v1.handlers import routes
from aichat.v1.middlewares import openai_auth, openai_errors


def create_v1_app() -> web.Application:
    app = web.Application(middlewares=[openai_errors, openai_auth])
    app.router.add_routes(routes)
    return app
