"""The HTTP layer: middlewares, errors, request parsing, CORS, access log, JSON, app keys."""
