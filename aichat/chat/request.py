"""The chat request bodies of docs/api.md §5.1 and §6.3, checked before anything is stored.

Their fields and limits are declared in aichat.http.bodies (CHAT, REGENERATE).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aichat.http.bodies import CHAT, CHAT_IMAGES, REGENERATE

_THREAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Image:
    data: str
    mime: str

    def part(self) -> dict[str, Any]:
        return {"type": "image_url",
                "image_url": {"url": f"data:{self.mime};base64,{self.data}"}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    session_id: int
    content: str
    images: list[Image] = field(default_factory=list)


def _image_chars(body: dict[str, Any]) -> int:
    """The base64 characters the images' check would decode (too many items: none, it refuses
    them before decoding)."""
    raw = body.get("images")
    if not isinstance(raw, list) or len(raw) > CHAT_IMAGES.max_items:
        return 0
    return sum(len(i["data"]) for i in raw
               if isinstance(i, dict) and isinstance(i.get("data"), str))


async def parse_chat(body: dict[str, Any]) -> ChatRequest:
    # Decoding megabytes of base64 would stall every other stream: do it on a thread.
    if _image_chars(body) > _THREAD_BYTES:
        fields = await asyncio.to_thread(CHAT.parse, body)
    else:
        fields = CHAT.parse(body)
    return ChatRequest(fields["sessionId"], fields["content"],
                       [Image(i["data"], i["mime"]) for i in fields["images"]])


@dataclass(frozen=True, slots=True)
class RegenerateRequest:
    session_id: int
    message_id: int | None


def parse_regenerate(body: dict[str, Any]) -> RegenerateRequest:
    fields = REGENERATE.parse(body)
    return RegenerateRequest(fields["sessionId"], fields["messageId"])
