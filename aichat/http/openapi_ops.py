"""Building blocks of the OpenAPI operations (aichat.http.openapi): `op` for the JSON API, whose
errors follow from its access, body and parameters, and `v1_op` for the OpenAI-compatible
surface."""

from __future__ import annotations

from typing import Any

from aichat.http.fields import Body
from aichat.http.openapi_components import ERRORS
from aichat.http.schema import NULL, STRING, Schema, array, integer, obj, ref
from aichat.http.validate import Paging

Operation = tuple[str, str, Schema]  # (method, path, operation)
MOMENT = {"anyOf": [{"type": "string", "format": "date"},
                    {"type": "string", "format": "date-time"},
                    {"type": "string", "maxLength": 0}]}
UNHEALTHY = {"503": ref("Unhealthy", "responses")}
IDS = (ref("id", "parameters"),)
PAGE = ref("page", "parameters")
SSE = {
    "description": "The round as server-sent events: `data: <StreamEvent JSON>` lines and "
                   "`: ping` heartbeats, ending with one terminal event (complete, stop or "
                   "error). Failures after the headers are events, not statuses.",
    "content": {"text/event-stream": {"schema": STRING}},
}


def paged_by(paging: Paging) -> tuple[Schema, Schema]:
    """A list route's page and limit parameters."""
    return PAGE, {"name": "limit", "in": "query",
                  "schema": integer(1, paging.max_limit, default=paging.default_limit)}


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def op(op_id: str, tag: str, summary: str, *, access: str = "user", data: Schema = NULL,
       ok: Schema | None = None, body: Body | None = None, params: tuple[Schema, ...] = (),
       errors: tuple[int, ...] = (), more: dict[str, Schema] | None = None,
       description: str | None = None) -> Schema:
    """One operation: `data` in the success envelope (or the whole `ok` response), the body
    schema named `body`, and the errors its access, body and parameters imply plus `errors`
    (enveloped) and `more` (other shapes)."""
    codes = set(errors) | {500}
    if body is not None:
        codes |= {400, 413}
    for param in params:
        name = param.get("$ref", "").rpartition("/")[2]
        if name in ("id", "sessionId"):
            codes |= {400, 404}  # not digits; unknown or not the caller's
        elif name == "page" or param.get("in") == "query":
            codes.add(400)
    if access != "public":
        codes.add(401)
    if access == "admin":
        codes.add(403)
        summary += " (admin)"
    operation: Schema = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if access == "public":
        operation["security"] = []
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        schema = ref(body.component)
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": schema}}}
    envelope = {"allOf": [ref("Success"), {"properties": {"data": data}}]}
    answers = {"200": ok or {"description": "Success.",
                             "content": {"application/json": {"schema": envelope}}},
               **{str(code): ref(ERRORS[code][0], "responses") for code in codes},
               **(more or {})}
    operation["responses"] = dict(sorted(answers.items()))
    return operation


def paged(items: str, item: Schema) -> Schema:
    return obj({items: array(item), "pagination": ref("Pagination")})


def v1_op(op_id: str, summary: str, *, ok: Schema, body: str | None = None,
          stream: bool = False, errors: tuple[int, ...] = (),
          description: str | None = None) -> Schema:
    """An operation of the OpenAI-compatible surface: OpenAI's shapes, errors included."""
    error = {"content": {"application/json": {"schema": ref("OpenAIError")}}}
    content: dict[str, Any] = {"application/json": {"schema": ok}}
    if stream:
        content["text/event-stream"] = {"schema": {**STRING, "description": (
            "chat.completion.chunk events, then `data: [DONE]`.")}}
    operation: Schema = {
        "operationId": op_id, "tags": ["openai"], "summary": summary,
        "description": (description or "") + " Accepts a personal API key or a JWT.",
        "responses": {"200": {"description": "Success.", "content": content},
                      **{str(code): {"description": ERRORS[code][1], **error}
                         for code in sorted({401, 500, *errors})}}}
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": ref(body)}}}
    return operation
