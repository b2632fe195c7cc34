"""Our own export (aichat.portability.document) read back as an import plan.

Only `format`, `version` and `sessions` are read: `models` carry no keys and `settings` would
overwrite the caller's own, so neither is imported (docs/api.md §12).
"""

from __future__ import annotations

from typing import Any

from aichat.portability.plan import (FORMAT, ROLES, STATUSES, VERSION, Limits, Message, Plan,
                                     Session, Timeline, at_most, bad, from_iso, kind, message,
                                     title)


def parse(body: dict[str, Any], limits: Limits) -> Plan:
    if body.get("format") != FORMAT:
        raise bad("format", f'must be "{FORMAT}"')
    version = body.get("version")
    if type(version) is not int or version != VERSION:
        raise bad("version", f"must be {VERSION} (the export version this server reads)")
    items = at_most(kind(body.get("sessions"), list, "sessions", "a list"), limits.sessions,
                    "sessions")
    return Plan(FORMAT, [_session(item, f"sessions[{i}]", limits)
                         for i, item in enumerate(items)])


def _session(raw: Any, where: str, limits: Limits) -> Session:
    kind(raw, dict, where, "an object")
    raw_title = kind(raw.get("title"), str, f"{where}.title", "a string", nullable=True)
    created = from_iso(raw.get("createdAt"), f"{where}.createdAt")
    model = kind(raw.get("model"), str, f"{where}.model", "a string", nullable=True)
    items = at_most(kind(raw.get("messages"), list, f"{where}.messages", "a list"),
                    limits.messages, f"{where}.messages")
    timeline = Timeline(created)
    messages = [_message(item, f"{where}.messages[{j}]", timeline, limits)
                for j, item in enumerate(items)]
    start = created or (messages[0].created_at if messages else timeline.next(None))
    return Session(title(raw_title), start, model, messages)


def _message(raw: Any, where: str, timeline: Timeline, limits: Limits) -> Message:
    kind(raw, dict, where, "an object")
    role = raw.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad(f"{where}.role", "must be user or assistant")
    content = kind(raw.get("content"), str, f"{where}.content", "a string")
    reasoning = kind(raw.get("reasoning"), str, f"{where}.reasoning", "a string", nullable=True)
    status = raw.get("status")
    if status is None:
        status = "complete"
    elif not isinstance(status, str) or status not in STATUSES:
        raise bad(f"{where}.status", f"must be one of: {', '.join(STATUSES)}")
    created = timeline.next(from_iso(raw.get("createdAt"), f"{where}.createdAt"))
    return message(role, content, reasoning, status, created, limits, where)
