"""The OpenAPI operations of export and import (handlers/portability.py).

The import body's schema asks no more than the server checks (it checks more: a user message's
length, a reply's against `max_reply_chars`, real dates), so whatever the schema refuses the
server refuses too; docs/api.md §12 has the whole contract.
"""

from __future__ import annotations

from aichat.http.bodies import THEMES
from aichat.http.openapi_components import PRICE
from aichat.http.openapi_ops import IDS, Operation, op, query
from aichat.http.schema import (BOOL, COUNT, STRING, Schema, array, enum, integer, nullable, obj,
                                ref)
from aichat.portability import chatgpt, plan

_NUMBER: Schema = {"type": "number"}
_ANY_OBJECT: Schema = {"type": "object"}
_FORMAT = query("format", {"anyOf": [enum(("json", "markdown")),
                                     {"type": "string", "maxLength": 0}]},
                "`json` (default, also when empty): one JSON document; `markdown`: a zip of "
                "one Markdown file per session.")


def _document() -> Schema:
    """GET /api/export's JSON document (version 1)."""
    message = obj({"role": enum(plan.ROLES), "content": STRING, "reasoning": nullable(STRING),
                   "status": enum(plan.STATUSES), "createdAt": ref("Timestamp"),
                   "usage": nullable(ref("Tokens"))})
    session = obj({"title": STRING, "createdAt": ref("Timestamp"), "model": nullable(STRING),
                   "messages": array(message)})
    model = obj({"name": STRING, "apiUrl": {**STRING, "description": (
                     "scheme://host[:port]/path: no user info, query or fragment.")},
                 "supportsImages": BOOL, "inputPricePerMTok": PRICE,
                 "outputPricePerMTok": PRICE})
    settings = obj({"context_token_limit": nullable(integer()),
                    "theme": nullable(enum(THEMES))})
    return {**obj({"format": {"const": plan.FORMAT}, "version": {"const": plan.VERSION},
                   "exportedAt": ref("Timestamp"), "user": obj({"username": STRING}),
                   "models": array(model), "settings": settings, "sessions": array(session)}),
            "description": "Sessions oldest first, each with its messages oldest first; no "
                           "reply still being generated; personal models without their keys; "
                           "personal settings as chosen (null: the default)."}


def _export_answer() -> Schema:
    return {"description": "The export as an attachment, streamed.",
            "headers": {"Content-Disposition": {
                "schema": STRING,
                "description": 'attachment; filename="aichat-export-<username>-<date>.json" '
                               "(`.zip` for markdown)."}},
            "content": {"application/json": {"schema": _document()},
                        "application/zip": {"schema": {"type": "string",
                                                       "format": "binary"}}}}


def _ours() -> Schema:
    """Our export as an import reads it: `models`, `settings` and the rest are ignored."""
    moment = nullable({"type": "string", "pattern": plan.ISO_PATTERN})
    message = obj({"role": enum(plan.ROLES), "content": STRING, "reasoning": nullable(STRING),
                   "status": nullable(enum(plan.STATUSES)), "createdAt": moment},
                  ["role", "content"], closed=False)
    session = obj({"title": nullable(STRING), "createdAt": moment, "model": nullable(STRING),
                   "messages": array(message, maxItems=plan.MAX_MESSAGES)},
                  ["messages"], closed=False)
    return obj({"format": {"const": plan.FORMAT}, "version": {"const": plan.VERSION},
                "sessions": array(session, maxItems=plan.MAX_SESSIONS)}, closed=False)


def _chatgpt() -> Schema:
    """ChatGPT's conversations.json, the fields an import reads."""
    message = obj({"author": obj({"role": STRING}, closed=False),
                   "content": obj({"content_type": STRING, "parts": nullable(array({}))},
                                  ["content_type"], closed=False),
                   "create_time": nullable(_NUMBER), "metadata": nullable(_ANY_OBJECT),
                   "recipient": nullable(STRING)}, ["author", "content"], closed=False)
    node = obj({"message": nullable(message), "parent": nullable(STRING),
                "children": nullable(array(STRING))}, [], closed=False)
    conversation = obj({"title": nullable(STRING), "create_time": nullable(_NUMBER),
                        "update_time": nullable(_NUMBER), "current_node": nullable(STRING),
                        "default_model_slug": nullable(STRING),
                        "mapping": {"type": "object", "additionalProperties": node}},
                       ["mapping"], closed=False)
    return array(conversation, maxItems=plan.MAX_SESSIONS)


def _import_op() -> Schema:
    report = obj({"format": enum((plan.FORMAT, plan.CHATGPT)), "sessions": COUNT,
                  "messages": COUNT, "skipped": obj({key: COUNT for key in plan.SKIPPED})})
    operation = op(
        "importData", "data", "Import sessions from our export or ChatGPT's conversations.json",
        data=report, errors=(400, 413),
        description="Creates new sessions (never changes existing ones), all in one "
                    "transaction after the whole file is checked: a bad file changes nothing. "
                    "The body may be `max_import_bytes` long. ChatGPT conversations are read "
                    "along their current branch ("
                    + ", ".join(f"`{t}`" for t in chatgpt.TEXT_TYPES)
                    + " messages of users and the assistant kept). 400 also when the caller "
                      "can use no model at all.")
    operation["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"anyOf": [_ours(), _chatgpt()]}}}}
    return operation


def portability_ops() -> list[Operation]:
    return [
        ("get", "/api/export", op(
            "exportData", "data", "Export the caller's sessions, settings and models",
            params=(_FORMAT,), ok=_export_answer(),
            description="Streamed: sessions and messages are read in pages, never all at "
                        "once. Model API keys are never exported.")),
        ("get", "/api/users/{id}/export", op(
            "exportUserData", "data", "Export a user's data, as they would", access="admin",
            params=(*IDS, _FORMAT), ok=_export_answer(),
            description="Recorded in the audit log (`user_export`).")),
        ("post", "/api/import", _import_op()),
    ]
