"""The HTTP contract of docs/api.md as an OpenAPI 3.1 document.

`spec()` builds it as a dict; GET /api/openapi.json serves it, and `python -m aichat.http.openapi >
docs/openapi.json` writes the committed copy. tests/test_openapi.py checks that the copy is current
and that it describes exactly the routes the app registers; tests/test_fuzz.py checks the live
server against it. Here: the operations, route by route. The components (schemas built from
the request declarations and the settings table) are in aichat.http.openapi_components.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aichat import __version__
from aichat.http import bodies
from aichat.http.openapi_components import (openai_schemas, parameters, request_schemas,
                                            response_schemas, responses)
from aichat.http.openapi_portability import portability_ops
from aichat.http.openapi_search import search_ops
from aichat.http.openapi_ops import (IDS, MOMENT, SSE, UNHEALTHY, Operation, op, paged,
                                     paged_by, query, v1_op)
from aichat.http.schema import ID, STRING, Schema, array, enum, nullable, obj, ref
from aichat.store import audit


def operations() -> list[Operation]:
    """Every route the app registers, in the document's order."""
    return [*_account_ops(), *_model_ops(), *_session_ops(), *_usage_and_settings_ops(),
            *_service_ops(), *search_ops(), *portability_ops()]


def _account_ops() -> list[Operation]:
    """Auth and the admins' user management."""
    return [
        ("post", "/api/auth/register", op(
            "register", "auth", "Create an account and sign in", access="public",
            body=bodies.REGISTRATION, data=ref("AuthResult"), errors=(403, 409, 429),
            description="The first account becomes ADMIN in any mode; later ones USER, in "
                        "multi mode with registration enabled (else 403).")),
        ("post", "/api/auth/login", op(
            "login", "auth", "Sign in", access="public", body=bodies.CREDENTIALS,
            data=ref("AuthResult"), errors=(401, 429))),
        ("get", "/api/auth/me", op("getMe", "auth", "The caller", data=ref("UserRecord"))),
        ("put", "/api/auth/password", op(
            "changePassword", "auth", "Change the caller's password", body=bodies.PASSWORD_CHANGE,
            errors=(429,), description="Tokens issued before the change stop working and the "
                                       "caller's API keys are revoked.")),
        ("get", "/api/users", op(
            "listUsers", "users", "Users, newest first", access="admin",
            data=paged("users", ref("AdminUser")),
            params=(*paged_by(bodies.USERS_PAGE),
                    query("search", STRING, "Case-insensitive username substring.")))),
        ("get", "/api/users/{id}", op("getUser", "users", "One user", access="admin",
                                      params=IDS, data=ref("AdminUser"))),
        ("put", "/api/users/{id}/role", op(
            "setUserRole", "users", "Change a user's role", access="admin", params=IDS,
            body=bodies.ROLE_CHANGE, data=ref("UserRecord"),
            description="Not one's own role; at least one ADMIN must remain.")),
        ("delete", "/api/users/{id}", op(
            "deleteUser", "users", "Delete a user and all they own", access="admin",
            params=IDS, description="Not oneself, nor the last ADMIN.")),
        ("get", "/api/users/{id}/limits", op(
            "getUserLimits", "quotas", "A user's own limits, the defaults and those in force",
            access="admin", params=IDS, data=ref("UserLimitsView"))),
        ("put", "/api/users/{id}/limits", op(
            "setUserLimits", "quotas", "Set a user's own limits (partial; null: the default)",
            access="admin", params=IDS, body=bodies.USER_LIMITS, data=ref("UserLimitsView"))),
        ("get", "/api/users/{id}/quota", op(
            "getUserQuota", "quotas", "Where a user stands against their limits",
            access="admin", params=IDS, data=ref("Quota"))),
        ("get", "/api/admin/audit", _audit_op()),
        ("get", "/api/quota", op(
            "getQuota", "quotas", "Where the caller stands against their limits",
            data=ref("Quota"), description="Minutes, days and months are UTC calendar "
                                           "periods; `reserved` is held by rounds in flight.")),
    ]


def _audit_op() -> Schema:
    """GET /api/admin/audit: the audit log, paged like the users list."""
    event = obj({"id": ID, "createdAt": ref("Timestamp"), "actorType": enum(audit.ACTOR_TYPES),
                 "actorUserId": nullable(ID), "actorKeyId": nullable(ID),
                 "actorName": nullable(STRING), "address": nullable(STRING),
                 "action": enum(audit.ACTIONS), "target": nullable(STRING),
                 "detail": {"type": "object", "description": "At most 2000 characters of "
                                                             "JSON; never a secret."}})
    empty = {"type": "string", "maxLength": 0}
    return op(
        "listAuditEvents", "audit", "Audit log, newest first", access="admin",
        data=paged("events", event),
        params=(*paged_by(bodies.AUDIT_PAGE),
                query("actor", {"anyOf": [{"type": "string", "pattern": "^[0-9]{1,30}$"},
                                          {"const": "system"}, empty]},
                      "A user id (their actions, and their API keys'), or `system` (the "
                      "command line); absent or empty: all."),
                query("action", {"anyOf": [enum(audit.ACTIONS), empty]},
                      "One kind of event; absent or empty: all."),
                query("from", MOMENT, "ISO date (from 00:00:00.000Z) or date-time (no offset: "
                                      "UTC); absent or empty: no bound."),
                query("to", MOMENT, "ISO date (to 23:59:59.999Z) or date-time; absent or "
                                    "empty: no bound.")),
        description="Security-relevant events (sign-ins, account, key, model and settings "
                    "changes, backups), kept `audit_retention_days`.")


def _model_ops() -> list[Operation]:
    """Personal and system model configs."""
    model = ref("Model")
    return [
        ("get", "/api/models/system/list", op(
            "listSystemModels", "models", "System models with usage counts", access="admin",
            data=array(ref("SystemModel")))),
        ("post", "/api/models/system", op(
            "createSystemModel", "models", "Create a system model", access="admin",
            body=bodies.MODEL_CREATE, data=model, errors=(409,))),
        ("put", "/api/models/system/{id}", op(
            "updateSystemModel", "models", "Update a system model (partial)", access="admin",
            params=IDS, body=bodies.MODEL_UPDATE, data=model, errors=(409,))),
        ("delete", "/api/models/system/{id}", op(
            "deleteSystemModel", "models", "Delete a system model", access="admin",
            params=IDS, description="400 while chat sessions use it.")),
        ("get", "/api/models", op(
            "listModels", "models", "The caller's models and the system ones, newest first",
            data=obj({"personal": array(model), "system": array(model)}))),
        ("post", "/api/models", op("createModel", "models", "Create a personal model",
                                   body=bodies.MODEL_CREATE, data=model, errors=(409,))),
        ("get", "/api/models/{id}", op("getModel", "models", "An own or system model",
                                       params=IDS, data=model)),
        ("put", "/api/models/{id}", op(
            "updateModel", "models", "Update an own model (partial)", params=IDS,
            body=bodies.MODEL_UPDATE, data=model, errors=(409,),
            description="apiKey is replaced only when present.")),
        ("delete", "/api/models/{id}", op(
            "deleteModel", "models", "Delete an own model", params=IDS,
            description="400 while chat sessions use it.")),
    ]


def _session_ops() -> list[Operation]:
    """Sessions, their messages, and the chat rounds."""
    return [
        ("get", "/api/sessions", op(
            "listSessions", "sessions", "The caller's sessions, newest first",
            params=paged_by(bodies.SESSIONS_PAGE), data=paged("sessions", ref("SessionSummary")))),
        ("post", "/api/sessions", op(
            "createSession", "sessions", "Start a session", body=bodies.SESSION_CREATE,
            data=ref("SessionSummary"), errors=(404,))),
        ("get", "/api/sessions/{id}", op("getSession", "sessions", "A session with its messages",
                                         params=IDS, data=ref("Session"))),
        ("put", "/api/sessions/{id}", op(
            "renameSession", "sessions", "Rename a session", params=IDS, body=bodies.SESSION_RENAME,
            data=ref("SessionSummary"))),
        ("delete", "/api/sessions/{id}", op(
            "deleteSession", "sessions", "Delete a session (a running round is cancelled)",
            params=IDS)),
        ("delete", "/api/sessions/{id}/messages", op(
            "clearMessages", "sessions", "Delete a session's messages (usage rows stay)",
            params=IDS)),
        ("get", "/api/chat/sessions/{sessionId}/messages", op(
            "listMessages", "sessions", "A session's messages, oldest first",
            params=(ref("sessionId", "parameters"), *paged_by(bodies.MESSAGES_PAGE)),
            data=paged("messages", ref("Message")))),
        ("get", "/api/chat/sessions/{sessionId}/stream", op(
            "followChat", "chat", "Follow the reply being generated on a session",
            params=(ref("sessionId", "parameters"),
                    query("after", {"type": "string", "pattern": "^[0-9]{0,11}$"},
                          "Send the events after this sequence number (Last-Event-ID wins).")),
            ok=SSE, errors=(404, 429),
            more={"204": {"description": "No round is running on the session."}},
            description="Last-Event-ID `<generationId>:<n>` of this round: the events after n; "
                        "neither it nor `after`: `start`, the text so far, then live events. "
                        "A round on another instance is followed through its checkpoints "
                        "(ids `<generationId>:c<part>`); a `start` event means: replace the "
                        "reply so far (docs/api.md §5.9).")),
        ("post", "/api/chat/stream", op(
            "streamChat", "chat", "Send a message and stream the reply", body=bodies.CHAT,
            ok=SSE, errors=(404, 429), description="JSON errors come before anything is stored.")),
        ("post", "/api/chat/regenerate", op(
            "regenerate", "chat", "Stream a new reply to the last user message",
            body=bodies.REGENERATE, ok=SSE, errors=(404, 429),
            description="messageId, when given, must be the latest assistant reply.")),
        ("post", "/api/chat/completion", op(
            "completeChat", "chat", "Send a message and wait for the whole reply",
            body=bodies.CHAT, data=ref("Completion"), errors=(404, 429, 502, 504),
            description="Right after a stopped stream with the same content it returns that "
                        "round's partial reply instead (docs/api.md §6.1).")),
        ("post", "/api/chat/stop", op(
            "stopChat", "chat", "Stop the session's running round", body=bodies.SESSION_REF,
            errors=(404,), data={"anyOf": [
                obj({"stopped": {"const": False}}),
                obj({"stopped": {"const": True}, "assistantMessageId": nullable(ID)})]})),
    ]


def _usage_and_settings_ops() -> list[Operation]:
    """Token usage, and the system and personal settings."""
    return [
        ("get", "/api/chat/usage", op(
            "getSessionUsage", "usage", "Token usage of one session", errors=(404,),
            params=(query("sessionId", ID, "The session.", required=True),),
            data=ref("SessionUsage"))),
        ("get", "/api/chat/sessions/usage", op(
            "listSessionsUsage", "usage", "Token totals per session with usage",
            data=array(obj({"sessionId": ID, "totals": ref("Totals")})))),
        ("get", "/api/chat/usage/daily", op(
            "getDailyUsage", "usage", "Token usage per UTC day", errors=(404,),
            params=(query("from", MOMENT, "ISO date (from 00:00:00.000Z) or date-time; "
                                          "absent or empty: 30 days ago."),
                    query("to", MOMENT, "ISO date (to 23:59:59.999Z) or date-time; "
                                        "absent or empty: now."),
                    query("sessionId", {"anyOf": [ID, {"type": "string", "maxLength": 0}]},
                          "One session; absent or empty: all the caller's.")),
            data=ref("DailyUsage"))),
        ("get", "/api/usage/summary", op(
            "getUsageSummary", "usage", "Everyone's usage by user, model or UTC day",
            access="admin",
            params=(query("from", MOMENT, "As for /api/chat/usage/daily."),
                    query("to", MOMENT, "As for /api/chat/usage/daily."),
                    query("groupBy", {"anyOf": [enum(("user", "model", "day")),
                                               {"type": "string", "maxLength": 0}]},
                          "Default (also when empty) `user`.")),
            data=ref("UsageSummary"),
            description="With `Accept: text/csv`: the rows as CSV (a header line; an "
                        "unknown cost is an empty field).")),
        ("get", "/api/settings/system", op(
            "getSystemSettings", "settings", "System settings (any signed-in user)",
            data=ref("SystemSettings"))),
        ("put", "/api/settings/system", op(
            "updateSystemSettings", "settings", "Change system settings (partial)",
            access="admin", body=bodies.SYSTEM_SETTINGS, data=ref("SystemSettings"))),
        ("get", "/api/settings/personal", op(
            "getPersonalSettings", "settings", "The caller's settings",
            data=ref("PersonalSettings"))),
        ("put", "/api/settings/personal", op(
            "updatePersonalSettings", "settings", "Change the caller's settings (partial)",
            body=bodies.PERSONAL_SETTINGS, data=ref("PersonalSettings"))),
    ]


def _service_ops() -> list[Operation]:
    """Public service routes, API keys and the OpenAI-compatible surface."""
    return [
        ("get", "/api/health", op("getHealth", "service", "Health check", access="public",
                                  data=ref("Health"), more=UNHEALTHY)),
        ("get", "/api/settings/health", op(
            "getSettingsHealth", "service", "Health check (alias)", access="public",
            data=ref("Health"), more=UNHEALTHY)),
        ("get", "/api/settings/app-info", op(
            "getAppInfo", "service", "Name, version, mode and features", access="public",
            data=ref("AppInfo"))),
        ("get", "/metrics", op(
            "getMetrics", "service", "Prometheus metrics", access="public",
            ok={"description": "Prometheus's text exposition format, version 0.0.4.",
                "content": {"text/plain": {"schema": STRING}}}, errors=(401, 403, 404),
            description="Without METRICS_TOKEN: only a client on this machine that no proxy "
                        "forwarded (else 403); with it: `Authorization: Bearer <token>` (else "
                        "401). METRICS_ENABLED=false: 404 (docs/operations.md §9).")),
        ("get", "/", op("getRoot", "service", "Route index", access="public",
                        data=ref("Index"))),
        ("get", "/api", op("getApiIndex", "service", "Route index", access="public",
                           data=ref("Index"))),
        ("post", "/api/keys", op(
            "createApiKey", "keys", "Create a personal API key for /v1",
            body=bodies.API_KEY_CREATE, data=ref("NewApiKey"),
            description="The key is in this answer only: it is stored as a hash. At most 50 "
                        "per user.")),
        ("get", "/api/keys", op("listApiKeys", "keys", "The caller's API keys, newest first",
                                data=array(ref("ApiKey")))),
        ("delete", "/api/keys/{id}", op("revokeApiKey", "keys", "Revoke an API key at once",
                                        params=IDS)),
        ("get", "/api/keys/usage", op(
            "getApiUsage", "keys", "/v1 token usage per UTC day and model",
            params=(query("from", MOMENT, "As for /api/chat/usage/daily."),
                    query("to", MOMENT, "As for /api/chat/usage/daily.")),
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
                                             "usage", "quotas", "audit", "data", "keys", "settings",
                                             "service", "openai")],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
            "parameters": parameters(),
            "responses": responses(),
            "schemas": {**request_schemas(), **response_schemas(), **openai_schemas()},
        },
    }


def to_json(document: dict[str, Any]) -> str:
    """The committed copy's form: indented, keys in insertion order (so deterministic)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(to_json(spec()))
