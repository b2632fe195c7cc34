"""GET /api/export's JSON document (docs/api.md §12), produced piece by piece.

    {"format": "aichat-export", "version": 1, "exportedAt", "user": {"username"},
     "models": [...], "settings": {...}, "sessions": [{"title", "createdAt", "model",
     "messages": [{"role", "content", "reasoning", "status", "createdAt", "usage"}]}]}

`sessions` comes last, so everything before it is written at once and each session and
message is serialised alone. Memory: what the store reads at a time (aichat.store.portability:
at most TEXT_BUDGET characters of message text, or one larger message) plus FLUSH_BYTES of
output waiting to be written.
"""

from __future__ import annotations

from typing import Any, AsyncGenerator

from aichat.handlers.audit import url_shown
from aichat.http import jsonfast
from aichat.portability.plan import FORMAT, VERSION
from aichat.store import portability as store
from aichat.store.base import Reader
from aichat.timeutil import now_iso

FLUSH_BYTES = 64 * 1024


async def head(db: Reader, user_id: int, username: str) -> dict[str, Any]:
    """Everything but the sessions. A model's key is never read; its URL loses user info,
    query and fragment, where a provider key may ride."""
    models = await store.personal_models(db, user_id)
    for model in models:
        model["apiUrl"] = url_shown(model["apiUrl"])
    return {"format": FORMAT, "version": VERSION, "exportedAt": now_iso(),
            "user": {"username": username}, "models": models,
            "settings": await store.personal_settings(db, user_id)}


def _open(value: dict[str, Any], key: str) -> bytes:
    """`value` as JSON with a last key `key` whose list is left open: `{..., "key": [`."""
    return jsonfast.dumps(value)[:-1] + b',"' + key.encode() + b'":['


async def chunks(db: Reader, user_id: int, username: str) -> AsyncGenerator[bytes, None]:
    out = bytearray(_open(await head(db, user_id, username), "sessions"))
    session_comma = b""
    async for session in store.sessions(db, user_id):
        out += session_comma + _open({"title": session["title"],
                                      "createdAt": session["createdAt"],
                                      "model": session["model"]}, "messages")
        session_comma, message_comma = b",", b""
        async for message in store.messages(db, session["id"]):
            out += message_comma + jsonfast.dumps(message)
            message_comma = b","
            if len(out) >= FLUSH_BYTES:
                yield bytes(out)
                out.clear()
        out += b"]}"
    out += b"]}"
    yield bytes(out)
