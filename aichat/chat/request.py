"""The chat request bodies of api.md §5.1 and §6.3, checked before anything is stored."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from aichat.http.errors import ApiError
from aichat.http.validate import body_id

MAX_CONTENT = 10000
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_MIME = re.compile(r"image/[A-Za-z0-9][A-Za-z0-9.+-]{0,99}")
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


def _content(body: dict[str, Any]) -> str:
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "content is required and must not be blank")
    if len(content) > MAX_CONTENT:
        raise ApiError(400, f"content must be at most {MAX_CONTENT} characters")
    return content


def _decoded_size(data: str) -> int | None:
    """The decoded length of strict base64, or None if it is not base64."""
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def _check_images(raw: list[Any]) -> list[Image]:
    images = []
    for i, item in enumerate(raw):
        name = f"images[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{name} must be an object with data and mime")
        data, mime = item.get("data"), item.get("mime")
        if not isinstance(mime, str) or not _MIME.fullmatch(mime):
            raise ApiError(400, f"{name}.mime must be image/<subtype>")
        if not isinstance(data, str) or not data or data.startswith("data:"):
            raise ApiError(400, f"{name}.data must be base64 without a data: prefix")
        if len(data) > (MAX_IMAGE_BYTES // 3 + 1) * 4:
            raise ApiError(400, f"{name} is larger than 5 MiB")
        size = _decoded_size(data)
        if size is None:
            raise ApiError(400, f"{name}.data is not valid base64")
        if size > MAX_IMAGE_BYTES:
            raise ApiError(400, f"{name} is larger than 5 MiB")
        images.append(Image(data, mime))
    return images


async def parse_chat(body: dict[str, Any]) -> ChatRequest:
    session_id = body_id(body, "sessionId")
    content = _content(body)
    raw = body.get("images")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ApiError(400, "images must be a list")
    if len(raw) > MAX_IMAGES:
        raise ApiError(400, f"images may hold at most {MAX_IMAGES} items")
    size = sum(len(i.get("data", "")) for i in raw if isinstance(i, dict)
               and isinstance(i.get("data"), str))
    # Decoding megabytes of base64 would stall every other stream: do it on a thread.
    images = (await asyncio.to_thread(_check_images, raw) if size > _THREAD_BYTES
              else _check_images(raw))
    return ChatRequest(session_id, content, images)


@dataclass(frozen=True, slots=True)
class RegenerateRequest:
    session_id: int
    message_id: int | None


def parse_regenerate(body: dict[str, Any]) -> RegenerateRequest:
    session_id = body_id(body, "sessionId")
    message_id = body_id(body, "messageId") if body.get("messageId") is not None else None
    return RegenerateRequest(session_id, message_id)
