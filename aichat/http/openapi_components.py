"""The components of the OpenAPI document (aichat.http.openapi): schemas, shared responses and
parameters.

Request bodies come from their declarations in aichat.http.bodies and the system settings from
aichat.settings.table. Response objects are closed (`additionalProperties: false`) so the fuzz
notices any field the document misses.
"""

from __future__ import annotations

from aichat.http import bodies
from aichat.http.schema import (BOOL, COUNT, ID, NULL, STRING, Schema, array, enum, extend,
                                integer, nullable, obj, ref, text)
from aichat.http.validate import MAX_PAGE
from aichat.settings.system import SOURCES
from aichat.settings.table import BY_KEY, RUNTIME

MESSAGE_STATUSES = ("complete", "stopped", "error", "interrupted", "streaming")  # sql/012
TOKENS: dict[str, Schema] = {"prompt_tokens": COUNT, "completion_tokens": COUNT,
                             "total_tokens": COUNT}
COST: Schema = {"type": ["number", "null"], "minimum": 0,
                "description": "In the system currency; null: no price known (docs/api.md §3)."}
PRICE: Schema = {"type": ["number", "null"], "minimum": 0,
                 "description": "Per million tokens, in the system currency; null: none."}
_OUTPUT = {"bool": BOOL, "int": integer(), "text": STRING, "money": {"type": "number"}}


def setting_output(kind: str, choices: tuple[str, ...]) -> Schema:
    """What GET /api/settings/system returns for a setting: its type only, since a value stored
    before a range was narrowed is still served as it is."""
    return _OUTPUT.get(kind) or enum(choices)


def _nullable_if(condition: bool, schema: Schema) -> Schema:
    return nullable(schema) if condition else schema


def request_schemas() -> dict[str, Schema]:
    return {body.component: body.schema() for body in bodies.ALL}


def response_schemas() -> dict[str, Schema]:
    return {**_envelope_schemas(), **_resource_schemas(), **_usage_schemas(),
            **_service_schemas(), **_stream_schemas()}


def _envelope_schemas() -> dict[str, Schema]:
    """The envelopes and the shared scalars."""
    return {
        "Success": obj({"success": {"const": True}, "data": {}, "message": STRING},
                       ["success", "data"]),
        "Error": obj({"success": {"const": False}, "error": text(1, blank=True), "data": NULL}),
        "Timestamp": {"type": "string", "format": "date-time",
                      "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
                      "description": "UTC with milliseconds and Z."},
        "Role": enum(bodies.ROLES),
        "AppMode": enum(BY_KEY["app_mode"].choices),
        "Pagination": obj({"page": integer(1), "limit": integer(1), "total": COUNT,
                           "totalPages": COUNT}),
    }


def _resource_schemas() -> dict[str, Schema]:
    """Users, models, sessions and messages."""
    user = obj({"id": ID, "username": STRING, "role": ref("Role")})
    model = obj({"id": ID, "userId": nullable(ID), "name": STRING, "apiUrl": STRING,
                 "apiKey": {"const": "", "description": "Always empty: keys never leave."},
                 "supportsImages": BOOL, "createdAt": ref("Timestamp"),
                 "inputPricePerMTok": PRICE, "outputPricePerMTok": PRICE})
    summary = obj({"id": ID, "userId": ID, "modelConfigId": ID, "title": STRING,
                   "createdAt": ref("Timestamp"),
                   "modelConfig": obj({"id": ID, "name": STRING, "supportsImages": BOOL}),
                   "_count": obj({"messages": COUNT})})
    return {
        "User": user,
        "UserRecord": extend(user, createdAt=ref("Timestamp")),
        "AdminUser": extend(user, createdAt=ref("Timestamp"), _count=obj(
            {"chatSessions": COUNT, "modelConfigs": COUNT})),
        "AuthResult": obj({"user": ref("User"), "token": {**STRING, "description": "HS256 JWT."}}),
        "Model": model,
        "SystemModel": extend(model, _count=obj({"chatSessions": COUNT})),
        "SessionSummary": summary,
        "Session": extend(summary, messages=array(ref("Message"))),
        "Message": obj({"id": ID, "sessionId": ID, "role": enum(("user", "assistant")),
                        "content": STRING, "createdAt": ref("Timestamp"),
                        "status": enum(MESSAGE_STATUSES), "reasoning": nullable(STRING),
                        "usage": nullable(ref("Tokens"))}),
    }


def _usage_schemas() -> dict[str, Schema]:
    """Token counts: of a round, a session, a day."""
    context = {"prompt_tokens": COUNT, "context_limit": COUNT, "context_remaining": COUNT}
    return {
        "Tokens": obj(TOKENS),
        "Totals": obj({**TOKENS, "cost": COST}),
        "RoundUsage": obj({**TOKENS, "context_limit": COUNT, "context_remaining": COUNT}),
        "Completion": obj({"content": STRING, "usage": nullable(ref("RoundUsage")),
                           "userMessageId": ID, "assistantMessage": nullable(ref("Message"))}),
        "SessionUsage": obj({
            "totals": ref("Totals"),
            "last_round": nullable(obj({**TOKENS, "context_limit": nullable(COUNT),
                                        "createdAt": ref("Timestamp"), "model": STRING,
                                        "provider": nullable(STRING), "cost": COST})),
            "current": obj(context)}),
        "UsageSummary": obj({
            "from": ref("Timestamp"), "to": ref("Timestamp"),
            "groupBy": enum(("user", "model", "day")), "currency": STRING,
            "rows": array({"type": "object", "additionalProperties": False, "properties": {
                "userId": ID, "username": STRING, "model": STRING,
                "date": {"type": "string", "format": "date"}, "rounds": COUNT, **TOKENS,
                "cost": COST}})}),
        "DailyUsage": obj({"from": ref("Timestamp"), "to": ref("Timestamp"), "rows": array(
            obj({"date": {"type": "string", "format": "date"}, **TOKENS, "cost": COST}))}),
    }


def _service_schemas() -> dict[str, Schema]:
    """Settings, service routes and API keys."""
    source = {**enum(SOURCES), "description": "`admin`: stored by an admin (PUT null deletes "
              "it); `env`: its environment variable; `default`: the built-in or per-mode one."}
    system = {**{row.key: _nullable_if(row.default is None and row.runtime_default is None,
                                       setting_output(row.kind, row.choices))
                 for row in RUNTIME},
              "app_mode": ref("AppMode"), "max_context_tokens": integer(),
              "sources": obj({row.key: source for row in RUNTIME})}
    index = obj({"name": {"const": "aichat"}, "version": STRING, "routes": array(STRING)})
    api_key = obj({"id": ID, "name": STRING, "prefix": STRING, "createdAt": ref("Timestamp"),
                   "lastUsedAt": nullable(ref("Timestamp")),
                   "expiresAt": nullable(ref("Timestamp")),
                   "tokensPerMonth": nullable(integer())})
    count, amount = nullable(integer()), nullable({"type": "number"})
    limits = obj({"requestsPerMinute": count, "tokensPerDay": count, "tokensPerMonth": count,
                  "costPerMonth": amount, "maxConcurrentStreams": count})
    meter = obj({"limit": nullable({"type": "number"}), "used": {"type": "number"},
                 "reserved": {"type": "number"}, "remaining": nullable({"type": "number"}),
                 "resetsAt": nullable(ref("Timestamp"))})
    return {
        "UserLimitsView": extend(limits, defaults=limits, effective=limits),
        "Quota": obj({"currency": STRING, "limits": obj({
            name: meter for name in ("requestsPerMinute", "tokensPerDay", "tokensPerMonth",
                                     "costPerMonth", "maxConcurrentStreams")})}),
        "SystemSettings": obj(system),
        "PersonalSettings": obj({"context_token_limit": integer(),
                                 "theme": enum(bodies.THEMES)}),
        "Health": obj({"status": {"const": "healthy"}, "timestamp": ref("Timestamp"),
                       "version": STRING, "database": {"const": "connected"},
                       "memory": obj({"rss": COUNT})}),
        "AppInfo": obj({"name": {"const": "aichat"}, "version": STRING, "mode": ref("AppMode"),
                        "features": obj({"registration": BOOL, "streaming": BOOL,
                                         "file_upload": BOOL, "long_term_memory": BOOL})}),
        "Index": index,
        "ApiKey": api_key,
        "NewApiKey": extend(api_key, key={**STRING, "description": "Shown only here."}),
        "ApiUsage": obj({"from": ref("Timestamp"), "to": ref("Timestamp"), "rows": array(obj({
            "date": {"type": "string", "format": "date"}, "model": STRING,
            "requests": COUNT, **TOKENS, "cost": COST}))}),
    }


def _stream_schemas() -> dict[str, Schema]:
    """What a chat stream sends (docs/api.md §5.6)."""
    return {
        "StreamEvent": {
            "description": "The JSON of one `data:` line of a chat stream (docs/api.md §5.6).",
            "anyOf": [
                obj({"type": {"const": "start"}, "messageId": ID, "generationId": STRING},
                    ["type", "messageId"]),
                obj({"type": {"const": "usage"}, "usage": {"type": "object"}}),
                obj({"type": enum(("content", "reasoning")), "content": text(1, blank=True)}),
                obj({"type": {"const": "stop"}, "reason": STRING,
                     "assistantMessageId": nullable(ID)}, ["type", "reason"]),
                obj({"type": {"const": "end"}}),
                obj({"type": {"const": "complete"}, "assistantMessageId": nullable(ID)}),
                obj({"type": {"const": "error"}, "error": STRING,
                     "assistantMessageId": nullable(ID)}),
            ]},
    }



# Enveloped errors by status: component name and when they happen.
ERRORS = {
    400: ("BadRequest", "Validation failed, malformed JSON body, or a rule refused it."),
    401: ("Unauthorized", "Missing, malformed, invalid or expired bearer token (or bad login)."),
    403: ("Forbidden", "Admins only, or registration closed."),
    404: ("NotFound", "Unknown id, or another user's resource."),
    405: ("MethodNotAllowed", "A method the path does not list."),
    409: ("Conflict", "The name is taken."),
    413: ("PayloadTooLarge", "Body over the limit (32 MiB for /api/chat/*, else 1 MiB)."),
    429: ("TooManyRequests", "Rate or concurrency limit; retry after Retry-After seconds."),
    500: ("InternalError", "Unexpected fault (never for bad input)."),
    502: ("BadGateway", "The upstream answered non-2xx after the retry."),
    504: ("GatewayTimeout", "The upstream round ran out of time."),
}
HEADERS = {405: "Allow", 429: "Retry-After"}


def responses() -> dict[str, Schema]:
    shared: dict[str, Schema] = {}
    for status, (name, description) in ERRORS.items():
        shared[name] = {"description": description,
                        "content": {"application/json": {"schema": ref("Error")}}}
        if status in HEADERS:
            shared[name]["headers"] = {HEADERS[status]: {"schema": STRING}}
    # The one error whose data is not null: what the health probe saw.
    shared["Unhealthy"] = {"description": "The database is down.", "content": {
        "application/json": {"schema": obj({
            "success": {"const": False}, "error": STRING,
            "data": obj({"status": {"const": "unhealthy"}, "timestamp": ref("Timestamp"),
                         "error": STRING})})}}}
    return shared


def parameters() -> dict[str, Schema]:
    def path(name: str) -> Schema:
        return {"name": name, "in": "path", "required": True, "schema": ID,
                "description": "Decimal digits only, else 400."}

    return {"id": path("id"), "sessionId": path("sessionId"),
            "page": {"name": "page", "in": "query", "schema": integer(1, MAX_PAGE, default=1)}}


def openai_schemas() -> dict[str, Schema]:
    message = {"type": "object", "required": ["role"], "properties": {
        "role": enum(("system", "developer", "user", "assistant", "tool")),
        "content": {"anyOf": [STRING, array({"type": "object"}), NULL]}}}
    return {
        "OpenAIError": obj({"error": obj({"message": STRING, "type": STRING, "param": NULL,
                                          "code": nullable(STRING)})}),
        "OpenAIModelList": obj({"object": {"const": "list"}, "data": array(obj({
            "id": STRING, "object": {"const": "model"}, "created": COUNT,
            "owned_by": enum(("user", "system"))}))}),
        "OpenAIChatRequest": {"type": "object", "required": ["model", "messages"],
                              "properties": {
                                  "model": text(1), "messages": array(message, minItems=1),
                                  "stream": BOOL, "n": {"const": 1},
                                  "stream_options": {"type": "object", "properties": {
                                      "include_usage": BOOL}}},
                              "description": "Other OpenAI parameters pass through upstream."},
        "OpenAIChatCompletion": obj({
            "id": STRING, "object": {"const": "chat.completion"}, "created": COUNT,
            "model": STRING, "choices": array(obj({
                "index": COUNT, "finish_reason": STRING,
                "message": obj({"role": {"const": "assistant"}, "content": STRING,
                                "reasoning_content": STRING}, ["role", "content"])})),
            "usage": obj(TOKENS)}),
    }
