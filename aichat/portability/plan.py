"""What an import will write, checked whole before a row is (docs/api.md §12): sessions with
their messages, what the file held that is not imported, and the caps a file must keep.

A file breaking a rule is a 400 naming the place (`sessions[2].messages[5].content ...`); the
parsers (aichat.portability.ours, aichat.portability.chatgpt) run off the event loop, so these
checks raise ApiError from a worker thread.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aichat.http.bodies import CHAT, TITLE_MAX
from aichat.http.errors import ApiError
from aichat.http.fields import Content
from aichat.timeutil import iso, now_iso

FORMAT = "aichat-export"  # our export's `format`
VERSION = 1  # our export's `version`: the one this server writes and reads
CHATGPT = "chatgpt"

MAX_SESSIONS = 10_000  # sessions (conversations) one import may create
MAX_MESSAGES = 10_000  # messages one imported session may hold
_CONTENT = CHAT.fields["content"]
assert isinstance(_CONTENT, Content)
USER_CHARS = _CONTENT.hi  # as POST /api/chat/stream accepts
IMPORTED_TITLE = "Imported chat"  # a session whose file gives no title
STATUSES = ("complete", "stopped", "error", "interrupted")  # never `streaming`
ROLES = ("user", "assistant")

# What a file held that is not imported, by kind; the report lists every key, 0 or more.
SKIPPED = ("systemMessages", "toolMessages", "hiddenMessages", "otherRoles", "nonTextMessages",
           "nonTextParts", "emptyMessages", "otherBranches", "emptyConversations")

ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_ISO = re.compile(ISO_PATTERN, re.ASCII)
_NUL = "\x00"


@dataclass(frozen=True, slots=True)
class Limits:
    """Characters one message may hold: a reply (content and reasoning) `max_reply_chars`, as
    a round may store; a user message the same (history often holds prompts longer than
    POST /api/chat/stream takes, USER_CHARS: refusing a whole import for one would help no
    one). Tests may give smaller ones."""

    reply_chars: int
    user_chars: int = USER_CHARS
    sessions: int = MAX_SESSIONS
    messages: int = MAX_MESSAGES


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    reasoning: str | None
    status: str
    created_at: str

    def row(self) -> tuple[str, str, str | None, str, str]:
        return self.role, self.content, self.reasoning, self.status, self.created_at


@dataclass(slots=True)
class Session:
    title: str
    created_at: str
    model: str | None  # a model name the file gives, tried before the default
    messages: list[Message]


@dataclass(slots=True)
class Plan:
    format: str
    sessions: list[Session] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIPPED, 0))

    def report(self) -> dict[str, Any]:
        return {"format": self.format, "sessions": len(self.sessions),
                "messages": sum(len(s.messages) for s in self.sessions),
                "skipped": dict(self.skipped)}


def bad(where: str, rule: str) -> ApiError:
    return ApiError(400, f"{where} {rule}")


def kind(value: Any, expected: type, where: str, what: str, nullable: bool = False) -> Any:
    """`value` if it has the JSON type asked for, else a 400 (booleans are never asked for)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, expected):
        raise bad(where, f"must be {what}{' or null' if nullable else ''}")
    return value


def clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD on either store."""
    return text.replace(_NUL, "\ufffd") if _NUL in text else text


def title(raw: str | None) -> str:
    """A session title as the API allows it: not blank (else IMPORTED_TITLE), at most
    TITLE_MAX characters (a longer one is cut, ending with an ellipsis); kept as it is
    otherwise, spaces and all."""
    text = clean(raw or "")
    if not text.strip():
        return IMPORTED_TITLE
    return text if len(text) <= TITLE_MAX else text[:TITLE_MAX - 1] + "\u2026"


def from_iso(value: Any, where: str) -> str | None:
    """An ISO 8601 date-time with an offset as the stored form; None when null."""
    if value is None:
        return None
    rule = "must be an ISO date-time with an offset, e.g. 2025-10-21T08:30:12.345Z"
    if not isinstance(value, str) or not _ISO.fullmatch(value):
        raise bad(where, rule)
    try:
        return iso(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        raise bad(where, rule) from None


def from_epoch(value: Any, where: str) -> str | None:
    """Unix seconds (ChatGPT's times) as the stored form; None when null."""
    if value is None:
        return None
    rule = "must be a Unix time in seconds or null"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(where, rule)
    try:
        return iso(datetime.fromtimestamp(value, UTC))
    except (ValueError, OverflowError, OSError):
        raise bad(where, rule) from None


class Timeline:
    """Message times that never go back: a missing or earlier time takes the previous one (the
    first message without one, `fallback`, else now), so the app's order (time, then id) is
    the file's order."""

    def __init__(self, fallback: str | None) -> None:
        self.fallback = fallback
        self.last: str | None = None

    def next(self, moment: str | None) -> str:
        if moment is not None and (self.last is None or moment > self.last):
            self.last = moment
        elif self.last is None:
            self.last = self.fallback or now_iso()
        return self.last


def message(role: str, content: str, reasoning: str | None, status: str, created_at: str,
            limits: Limits, where: str) -> Message:
    """A message within the chat path's bounds."""
    content, reasoning = clean(content), None if reasoning is None else clean(reasoning)
    if role == "user":
        if not content.strip():
            raise bad(f"{where}.content", "must not be blank in a user message")
        if len(content) > limits.user_chars:
            raise bad(f"{where}.content",
                      f"must be at most {limits.user_chars} characters in a user message")
        if reasoning is not None:
            raise bad(f"{where}.reasoning", "must be null in a user message")
    elif len(content) + len(reasoning or "") > limits.reply_chars:
        raise bad(where, f"content and reasoning must be at most {limits.reply_chars} "
                         "characters together in an assistant message")
    return Message(role, content, reasoning, status, created_at)


def at_most(items: list[Any], cap: int, where: str) -> list[Any]:
    if len(items) > cap:
        raise bad(where, f"may hold at most {cap} items")
    return items
