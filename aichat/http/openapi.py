"""The HTTP contract of api.md as an OpenAPI 3.1 document.

`spec()` builds it as a dict; GET /api/openapi.json serves it, and `python -m aichat.http.openapi >
openapi.yaml` writes the committed copy. tests/test_openapi.py checks that the copy is current
and that it describes exactly the routes the app registers; tests/test_fuzz.py checks the live
server against it. The YAML emitter is hand-written so the server needs no YAML library.

Request bodies are open (api.md: unknown keys are ignored) and allow `null` wherever the server
reads null as "absent". Response objects are closed (`additionalProperties: false`) so the fuzz
notices any field the document misses. Limits are imported from the code that enforces them where
it names them, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from aichat import __version__
from aichat.chat.request import MAX_CONTENT, MAX_IMAGES
from aichat.handlers.settings import CONTEXT_MAX, CONTEXT_MIN, THEMES
from aichat.security.passwords import MAX_BYTES
from aichat.settings.system import SPECS

Schema = dict[str, Any]

MAX_PAGE = 1_000_000_000  # validate.paging
MESSAGE_STATUSES = ("complete", "stopped", "error", "interrupted")  # sql/004_crash_safety.sql

# --- schema helpers ---------------------------------------------------------------------------


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *,
        closed: bool = True) -> Schema:
    """An object; `required` defaults to every property (responses always carry them all)."""
    required = list(properties) if required is None else required
    schema: Schema = {"type": "object", **({"required": required} if required else {}),
                      "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def extend(base: Schema, **fields: Schema) -> Schema:
    """`base` plus more required fields, still closed (allOf cannot extend a closed object)."""
    return obj({**base["properties"], **fields})


def nullable(schema: Schema) -> Schema:
    """`schema` or null: a type list when there is a type, else anyOf."""
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*types, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def optional(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """A request body: open, and null (read as absent) allowed for the optional fields."""
    return obj({k: v if k in required else nullable(v) for k, v in properties.items()},
               list(required), closed=False)


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def integer(lo: int | None = None, hi: int | None = None, **extra: Any) -> Schema:
    bounds = {"minimum": lo, "maximum": hi}
    return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}, **extra}


def text(lo: int = 1, hi: int | None = None, *, blank: bool = False, **extra: Any) -> Schema:
    """lo..hi characters and, unless `blank`, not only whitespace (the server's strip())."""
    schema: Schema = {"type": "string"}
    if lo > 0:
        schema["minLength"] = lo
    if hi is not None:
        schema["maxLength"] = hi
    if not blank and lo > 0:
        schema["pattern"] = r"\S"
    return {**schema, **extra}


def enum(values: tuple[str, ...] | list[str]) -> Schema:
    return {"enum": list(values)}


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NULL: Schema = {"type": "null"}
COUNT: Schema = integer(0)
ID: Schema = integer(1)
TOKENS: dict[str, Schema] = {"prompt_tokens": COUNT, "completion_tokens": COUNT,
                             "total_tokens": COUNT}


def setting_input(key: str) -> Schema:
    """What PUT /api/settings/system accepts for a key: its rule in aichat.settings.SPECS."""
    spec = SPECS[key]
    if spec.kind == "bool":
        return BOOL
    if spec.kind == "int":
        return integer(spec.lo, spec.hi)
    if spec.kind == "choice":
        return enum(spec.choices)
    return text(spec.lo, spec.hi, blank=spec.lo == 0)


def setting_output(key: str) -> Schema:
    """What GET returns for a key (the type only: environment defaults have wider ranges)."""
    spec = SPECS[key]
    return {"bool": BOOL, "int": integer(), "text": STRING}.get(spec.kind) or enum(spec.choices)


# --- components -------------------------------------------------------------------------------


def request_schemas() -> dict[str, Schema]:
    password = {"type": "string", "minLength": 4, "maxLength": MAX_BYTES,
                "allOf": [{"pattern": "[A-Za-z]"}, {"pattern": "[0-9]"}],
                "description": f"8-{MAX_BYTES} UTF-8 bytes (so 4-{MAX_BYTES} characters) with "
                               "an ASCII letter and a digit."}
    model = {
        "name": text(1, 100, description="Also the upstream `model` id."),
        "apiUrl": {"type": "string", "maxLength": 2048, "pattern": "^[Hh][Tt]{2}[Pp][Ss]?://[^/?#]",
                   "description": "Absolute http(s) URL of the chat-completions endpoint, "
                                  "without whitespace or control characters."},
        "apiKey": text(1, 4096, blank=True, description="Stored encrypted, never returned."),
        "supportsImages": {**BOOL, "default": False},
    }
    image = obj({"data": {"type": "string", "minLength": 1, "pattern":
                          "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                          "description": "Base64 without a data: prefix, at most 5 MiB decoded."},
                 "mime": {"type": "string", "pattern": "^image/[A-Za-z0-9][A-Za-z0-9.+-]{0,99}$"}},
                closed=False)
    return {
        "Credentials": obj({"username": STRING, "password": STRING}, closed=False),
        "Registration": obj({"username": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,20}$"},
                             "password": password}, closed=False),
        "PasswordChange": obj({"currentPassword": STRING, "newPassword": password},
                              closed=False),
        "ModelCreate": optional(model, ("name", "apiUrl", "apiKey")),
        "ModelUpdate": optional({**model, "supportsImages": BOOL}),
        "ChatRequest": optional({"sessionId": ID, "content": text(1, MAX_CONTENT),
                                 "images": array(image, maxItems=MAX_IMAGES)},
                                ("sessionId", "content")),
        "SystemSettingsUpdate": optional({key: setting_input(key) for key in SPECS}),
        "PersonalSettingsUpdate": optional({
            "context_token_limit": integer(CONTEXT_MIN, CONTEXT_MAX), "theme": enum(THEMES)}),
    }


def response_schemas() -> dict[str, Schema]:
    user = obj({"id": ID, "username": STRING, "role": ref("Role")})
    model = obj({"id": ID, "userId": nullable(ID), "name": STRING, "apiUrl": STRING,
                 "apiKey": {"const": "", "description": "Always empty: keys never leave."},
                 "supportsImages": BOOL, "createdAt": ref("Timestamp")})
    summary = obj({"id": ID, "userId": ID, "modelConfigId": ID, "title": STRING,
                   "createdAt": ref("Timestamp"),
                   "modelConfig": obj({"id": ID, "name": STRING, "supportsImages": BOOL}),
                   "_count": obj({"messages": COUNT})})
    context = {"prompt_tokens": COUNT, "context_limit": COUNT, "context_remaining": COUNT}
    system = {"registration_enabled": BOOL, "app_mode": ref("AppMode"),
              "max_context_tokens": integer(),
              **{key: setting_output(key) for key in SPECS}}
    index = obj({"name": {"const": "aichat"}, "version": STRING, "routes": array(STRING)})
    api_key = obj({"id": ID, "name": STRING, "prefix": STRING, "createdAt": ref("Timestamp"),
                   "lastUsedAt": nullable(ref("Timestamp")),
                   "expiresAt": nullable(ref("Timestamp"))})
    return {
        "Success": obj({"success": {"const": True}, "data": {}, "message": STRING},
                       ["success", "data"]),
        "Error": obj({"success": {"const": False}, "error": text(1, blank=True), "data": NULL}),
        "Timestamp": {"type": "string", "format": "date-time",
                      "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
                      "description": "UTC with milliseconds and Z."},
        "Role": enum(("ADMIN", "USER")),
        "AppMode": enum(("single", "multi")),
        "Pagination": obj({"page": integer(1), "limit": integer(1), "total": COUNT,
                           "totalPages": COUNT}),
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
        "Tokens": obj(TOKENS),
        "RoundUsage": obj({**TOKENS, "context_limit": COUNT, "context_remaining": COUNT}),
        "Completion": obj({"content": STRING, "usage": nullable(ref("RoundUsage")),
                           "userMessageId": ID, "assistantMessage": nullable(ref("Message"))}),
        "SessionUsage": obj({
            "totals": ref("Tokens"),
            "last_round": nullable(obj({**TOKENS, "context_limit": nullable(COUNT),
                                        "createdAt": ref("Timestamp"), "model": STRING,
                                        "provider": nullable(STRING)})),
            "current": obj(context)}),
        "DailyUsage": obj({"from": ref("Timestamp"), "to": ref("Timestamp"), "rows": array(
            obj({"date": {"type": "string", "format": "date"}, **TOKENS}))}),
        "SystemSettings": obj(system),
        "PersonalSettings": obj({"context_token_limit": integer(), "theme": enum(THEMES)}),
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
            "requests": COUNT, **TOKENS}))}),
        "StreamEvent": {
            "description": "The JSON of one `data:` line of a chat stream (api.md 5.6).",
            "anyOf": [
                obj({"type": {"const": "start"}, "messageId": ID}),
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


# --- operations -------------------------------------------------------------------------------


def limit(default: int, hi: int) -> Schema:
    return {"name": "limit", "in": "query", "schema": integer(1, hi, default=default)}


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


IDS = (ref("id", "parameters"),)
PAGE = ref("page", "parameters")
SSE = {
    "description": "The round as server-sent events: `data: <StreamEvent JSON>` lines and "
                   "`: ping` heartbeats, ending with one terminal event (complete, stop or "
                   "error). Failures after the headers are events, not statuses.",
    "content": {"text/event-stream": {"schema": STRING}},
}


def op(op_id: str, tag: str, summary: str, *, access: str = "user", data: Schema = NULL,
       ok: Schema | None = None, body: str | None = None, params: tuple[Schema, ...] = (),
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
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": ref(body)}}}
    envelope = {"allOf": [ref("Success"), {"properties": {"data": data}}]}
    answers = {"200": ok or {"description": "Success.",
                             "content": {"application/json": {"schema": envelope}}},
               **{str(code): ref(ERRORS[code][0], "responses") for code in codes},
               **(more or {})}
    operation["responses"] = dict(sorted(answers.items()))
    return operation


def operations() -> list[tuple[str, str, Schema]]:
    """(method, path, operation) for every route the app registers."""
    def paged(items: str, item: Schema) -> Schema:
        return obj({items: array(item), "pagination": ref("Pagination")})

    moment = {"anyOf": [{"type": "string", "format": "date"},
                        {"type": "string", "format": "date-time"},
                        {"type": "string", "maxLength": 0}]}
    unhealthy = {"503": ref("Unhealthy", "responses")}
    model = ref("Model")
    return [
        ("post", "/api/auth/register", op(
            "register", "auth", "Create an account and sign in", access="public",
            body="Registration", data=ref("AuthResult"), errors=(403, 409, 429),
            description="The first account becomes ADMIN in any mode; later ones USER, in "
                        "multi mode with registration enabled (else 403).")),
        ("post", "/api/auth/login", op(
            "login", "auth", "Sign in", access="public", body="Credentials",
            data=ref("AuthResult"), errors=(401, 429))),
        ("get", "/api/auth/me", op("getMe", "auth", "The caller", data=ref("UserRecord"))),
        ("put", "/api/auth/password", op(
            "changePassword", "auth", "Change the caller's password", body="PasswordChange",
            description="Tokens issued before the change stop working.")),
        ("get", "/api/users", op(
            "listUsers", "users", "Users, newest first", access="admin",
            data=paged("users", ref("AdminUser")),
            params=(PAGE, limit(10, 100),
                    query("search", STRING, "Case-insensitive username substring.")))),
        ("get", "/api/users/{id}", op("getUser", "users", "One user", access="admin",
                                      params=IDS, data=ref("AdminUser"))),
        ("put", "/api/users/{id}/role", op(
            "setUserRole", "users", "Change a user's role", access="admin", params=IDS,
            body="RoleChange", data=ref("UserRecord"),
            description="Not one's own role; at least one ADMIN must remain.")),
        ("delete", "/api/users/{id}", op(
            "deleteUser", "users", "Delete a user and all they own", access="admin",
            params=IDS, description="Not oneself, nor the last ADMIN.")),
        ("get", "/api/models/system/list", op(
            "listSystemModels", "models", "System models with usage counts", access="admin",
            data=array(ref("SystemModel")))),
        ("post", "/api/models/system", op(
            "createSystemModel", "models", "Create a system model", access="admin",
            body="ModelCreate", data=model, errors=(409,))),
        ("put", "/api/models/system/{id}", op(
            "updateSystemModel", "models", "Update a system model (partial)", access="admin",
            params=IDS, body="ModelUpdate", data=model, errors=(409,))),
        ("delete", "/api/models/system/{id}", op(
            "deleteSystemModel", "models", "Delete a system model", access="admin",
            params=IDS, description="400 while chat sessions use it.")),
        ("get", "/api/models", op(
            "listModels", "models", "The caller's models and the system ones, newest first",
            data=obj({"personal": array(model), "system": array(model)}))),
        ("post", "/api/models", op("createModel", "models", "Create a personal model",
                                   body="ModelCreate", data=model, errors=(409,))),
        ("get", "/api/models/{id}", op("getModel", "models", "An own or system model",
                                       params=IDS, data=model)),
        ("put", "/api/models/{id}", op(
            "updateModel", "models", "Update an own model (partial)", params=IDS,
            body="ModelUpdate", data=model, errors=(409,),
            description="apiKey is replaced only when present.")),
        ("delete", "/api/models/{id}", op(
            "deleteModel", "models", "Delete an own model", params=IDS,
            description="400 while chat sessions use it.")),
        ("get", "/api/sessions", op(
            "listSessions", "sessions", "The caller's sessions, newest first",
            params=(PAGE, limit(20, 100)), data=paged("sessions", ref("SessionSummary")))),
        ("post", "/api/sessions", op(
            "createSession", "sessions", "Start a session", body="SessionCreate",
            data=ref("SessionSummary"), errors=(404,))),
        ("get", "/api/sessions/{id}", op("getSession", "sessions", "A session with its messages",
                                         params=IDS, data=ref("Session"))),
        ("put", "/api/sessions/{id}", op(
            "renameSession", "sessions", "Rename a session", params=IDS, body="SessionRename",
            data=ref("SessionSummary"))),
        ("delete", "/api/sessions/{id}", op(
            "deleteSession", "sessions", "Delete a session (a running round is cancelled)",
            params=IDS)),
        ("delete", "/api/sessions/{id}/messages", op(
            "clearMessages", "sessions", "Delete a session's messages (usage rows stay)",
            params=IDS)),
        ("get", "/api/chat/sessions/{sessionId}/messages", op(
            "listMessages", "sessions", "A session's messages, oldest first",
            params=(ref("sessionId", "parameters"), PAGE, limit(1000, 1000)),
            data=paged("messages", ref("Message")))),
        ("post", "/api/chat/stream", op(
            "streamChat", "chat", "Send a message and stream the reply", body="ChatRequest",
            ok=SSE, errors=(404, 429), description="JSON errors come before anything is stored.")),
        ("post", "/api/chat/regenerate", op(
            "regenerate", "chat", "Stream a new reply to the last user message",
            body="RegenerateRequest", ok=SSE, errors=(404, 429),
            description="messageId, when given, must be the latest assistant reply.")),
        ("post", "/api/chat/completion", op(
            "completeChat", "chat", "Send a message and wait for the whole reply",
            body="ChatRequest", data=ref("Completion"), errors=(404, 429, 502, 504),
            description="Right after a stopped stream with the same content it returns that "
                        "round's partial reply instead (api.md 6.1).")),
        ("post", "/api/chat/stop", op(
            "stopChat", "chat", "Stop the session's running round", body="SessionRef",
            errors=(404,), data={"anyOf": [
                obj({"stopped": {"const": False}}),
                obj({"stopped": {"const": True}, "assistantMessageId": nullable(ID)})]})),
        ("get", "/api/chat/usage", op(
            "getSessionUsage", "usage", "Token usage of one session", errors=(404,),
            params=(query("sessionId", ID, "The session.", required=True),),
            data=ref("SessionUsage"))),
        ("get", "/api/chat/sessions/usage", op(
            "listSessionsUsage", "usage", "Token totals per session with usage",
            data=array(obj({"sessionId": ID, "totals": ref("Tokens")})))),
        ("get", "/api/chat/usage/daily", op(
            "getDailyUsage", "usage", "Token usage per UTC day", errors=(404,),
            params=(query("from", moment, "ISO date (from 00:00:00.000Z) or date-time; "
                                          "absent or empty: 30 days ago."),
                    query("to", moment, "ISO date (to 23:59:59.999Z) or date-time; "
                                        "absent or empty: now."),
                    query("sessionId", {"anyOf": [ID, {"type": "string", "maxLength": 0}]},
                          "One session; absent or empty: all the caller's.")),
            data=ref("DailyUsage"))),
        ("get", "/api/settings/system", op(
            "getSystemSettings", "settings", "System settings (any signed-in user)",
            data=ref("SystemSettings"))),
        ("put", "/api/settings/system", op(
            "updateSystemSettings", "settings", "Change system settings (partial)",
            access="admin", body="SystemSettingsUpdate", data=ref("SystemSettings"))),
        ("get", "/api/settings/personal", op(
            "getPersonalSettings", "settings", "The caller's settings",
            data=ref("PersonalSettings"))),
        ("put", "/api/settings/personal", op(
            "updatePersonalSettings", "settings", "Change the caller's settings (partial)",
            body="PersonalSettingsUpdate", data=ref("PersonalSettings"))),
        ("get", "/api/health", op("getHealth", "service", "Health check", access="public",
                                  data=ref("Health"), more=unhealthy)),
        ("get", "/api/settings/health", op(
            "getSettingsHealth", "service", "Health check (alias)", access="public",
            data=ref("Health"), more=unhealthy)),
        ("get", "/api/settings/app-info", op(
            "getAppInfo", "service", "Name, version, mode and features", access="public",
            data=ref("AppInfo"))),
        ("get", "/", op("getRoot", "service", "Route index", access="public",
                        data=ref("Index"))),
        ("get", "/api", op("getApiIndex", "service", "Route index", access="public",
                           data=ref("Index"))),
        ("post", "/api/keys", op(
            "createApiKey", "keys", "Create a personal API key for /v1", body="ApiKeyCreate",
            data=ref("NewApiKey"), description="The key is in this answer only: it is stored "
                                               "as a hash. At most 50 per user.")),
        ("get", "/api/keys", op("listApiKeys", "keys", "The caller's API keys, newest first",
                                data=array(ref("ApiKey")))),
        ("delete", "/api/keys/{id}", op("revokeApiKey", "keys", "Revoke an API key at once",
                                        params=IDS)),
        ("get", "/api/keys/usage", op(
            "getApiUsage", "keys", "/v1 token usage per UTC day and model",
            params=(query("from", moment, "As for /api/chat/usage/daily."),
                    query("to", moment, "As for /api/chat/usage/daily.")),
            data=ref("ApiUsage"))),
        ("get", "/v1/models", v1_op(
            "openaiListModels", "Models the caller may use (OpenAI format)",
            ok=ref("OpenAIModelList"), description="Ids are model config names; a personal "
                                                   "config shadows a system one of that name.")),
        ("post", "/v1/chat/completions", v1_op(
            "openaiChatCompletions", "Chat completion (OpenAI format), streamed or not",
            body="OpenAIChatRequest", ok=ref("OpenAIChatCompletion"), stream=True,
            errors=(400, 404, 413, 429, 502, 504),
            description="Relayed by the chat engine (retries, timeouts, stop on disconnect); "
                        "one usage row per request, no chat session.")),
        ("get", "/api/openapi.json", op(
            "getOpenApi", "service", "This document", access="public",
            ok={"description": "The OpenAPI document itself, not enveloped.",
                "content": {"application/json": {"schema": {"type": "object"}}}})),
    ]


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
        "ApiKeyCreate": optional({"name": text(1, 100), "expiresInDays": integer(1, 3650)},
                                 ("name",)),
    }


def small_bodies() -> dict[str, Schema]:
    """Request bodies of one or two fields."""
    return {
        "RoleChange": obj({"role": ref("Role")}, closed=False),
        "SessionCreate": optional({"modelConfigId": ID, "title": text(
            1, 200, description='Default "New Chat".')}, ("modelConfigId",)),
        "SessionRename": obj({"title": text(1, 200)}, closed=False),
        "SessionRef": obj({"sessionId": ID}, closed=False),
        "RegenerateRequest": optional({"sessionId": ID, "messageId": ID}, ("sessionId",)),
    }


def spec() -> dict[str, Any]:
    """The whole document, built afresh on every call."""
    paths: dict[str, dict[str, Schema]] = {}
    for method, path, operation in operations():
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aichat",
            "version": __version__,
            "description": "Self-hosted AI chat backend. JSON answers are envelopes: "
                           "{success: true, data, message?} or {success: false, error: "
                           "<string>, data: null}. 200 for every success. Unknown routes "
                           "answer 404 and unlisted methods 405, both enveloped.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in ("auth", "users", "models", "sessions", "chat",
                                             "usage", "keys", "settings", "service",
                                             "openai")],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
            "parameters": parameters(),
            "responses": responses(),
            "schemas": {**request_schemas(), **small_bodies(), **response_schemas(),
                        **openai_schemas()},
        },
    }


# --- YAML -------------------------------------------------------------------------------------

WIDTH = 100
# Plain (unquoted) only where YAML 1.1 cannot read anything but this string: a letter, `_`, `/`
# or `$` first (so no number, date or indicator), no `:` or `#`, no reserved word.
_PLAIN = re.compile(r"[A-Za-z_/$][A-Za-z0-9_./{}$+-]*(?: [A-Za-z0-9_./{}()$+-]+)*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(value: Any, *, flow: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value.lower() not in _RESERVED
        if plain and not (flow and any(c in value for c in "{}[],")):
            return value
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    raise TypeError(f"no YAML form for {type(value).__name__}")


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(str(k), flow=True)}: {_flow(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value, flow=True)


def _fold(head: str, scalar: str, indent: int) -> list[str]:
    """`head` + `scalar`, a long double-quoted scalar broken at single spaces to fit WIDTH.

    Inside double quotes YAML folds a line break and the next line's indentation into one space,
    and a JSON string has no space inside an escape, so the text reads back unchanged.
    """
    line, start, lines = head + scalar, len(head) + 1, []
    while len(line) > WIDTH and scalar.startswith('"'):
        cut = line.rfind(" ", start, WIDTH)
        while cut > start and (line[cut - 1] == " " or line[cut + 1] == " "):
            cut = line.rfind(" ", start, cut)
        if cut <= start:
            break
        lines.append(line[:cut])
        line, start = " " * indent + line[cut + 1:], indent + 1
    return [*lines, line]


def _block(value: dict[str, Any] | list[Any], indent: int) -> list[str]:
    """Block style, except collections that fit on their line, which go in flow style."""
    pad = " " * indent
    lines = []
    entries = ([(f"{_scalar(str(k))}:", v) for k, v in value.items()]
               if isinstance(value, dict) else [("-", v) for v in value])
    for lead, item in entries:
        flow = _flow(item)
        if not isinstance(item, (dict, list)) or len(pad) + len(lead) + len(flow) < WIDTH:
            lines.extend(_fold(f"{pad}{lead} ", flow, indent + 2))
        elif lead == "-":
            nested = _block(item, indent + 2)
            lines.append(f"{pad}- {nested[0][indent + 2:]}")
            lines.extend(nested[1:])
        else:
            lines.append(f"{pad}{lead}")
            lines.extend(_block(item, indent + 2))
    return lines


def to_yaml(document: dict[str, Any]) -> str:
    """Block-style YAML for a JSON-like dict, keys in insertion order (so deterministic)."""
    return "\n".join(_block(document, 0)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(to_yaml(spec()))
