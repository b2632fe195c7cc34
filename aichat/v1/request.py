"""The body of POST /v1/chat/completions (docs/api.md §7), checked before any upstream call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aichat.chat.context import CONVERSATION_OVERHEAD, MESSAGE_OVERHEAD
from aichat.chat.tokenizer import Tokenizer
from aichat.http.errors import ApiError
from aichat.settings.config import Config

ROLES = ("system", "developer", "user", "assistant", "tool")
# Set by us: the model's upstream name, streaming, and the message list as validated.
_OURS = ("model", "messages", "stream")


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a usage chunk before [DONE]
    options: dict[str, Any]  # the client's other parameters, passed through unchanged
    has_images: bool  # an image_url part in any message


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may carry (V1_MAX_MESSAGES, V1_MAX_MESSAGE_CHARS, V1_MAX_TOTAL_CHARS):
    the messages are held, counted and re-sent on a retry, so their size is the server's."""

    messages: int
    message_chars: int
    total_chars: int

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(config.v1_max_messages, config.v1_max_message_chars,
                   config.v1_max_total_chars)


def _check_messages(value: Any, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty array")
    if len(value) > limits.messages:
        raise ApiError(400, f"messages may hold at most {limits.messages} items")
    total = 0
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of: {', '.join(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ApiError(400, f"messages[{i}].content must be a string or an array")
        size = len(text_of(content))
        if size > limits.message_chars:
            raise ApiError(400, f"messages[{i}].content must be at most {limits.message_chars} "
                                "characters")
        total += size
        if total > limits.total_chars:
            raise ApiError(400, f"messages must hold at most {limits.total_chars} characters "
                                "of text in all")
    return value


def parse_completion(body: dict[str, Any], limits: Limits) -> CompletionRequest:
    messages = _check_messages(body.get("messages"), limits)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n must be 1")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    stream_options = body.get("stream_options")
    include_usage = (isinstance(stream_options, dict)
                     and stream_options.get("include_usage") is True)
    has_images = any(isinstance(m.get("content"), list) and any(
        isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in messages)
    return CompletionRequest(model, messages, stream, include_usage,
                             {k: v for k, v in body.items() if k not in _OURS}, has_images)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


async def prompt_estimate(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> int:
    """docs/api.md §5.3's cost, used only when the provider reports no usage."""
    await tokenizer.warm()
    # One thread hop for all of them: thousands of messages counted one by one on the loop
    # stalled every other request (405 ms for 4 210 of them).
    counts = await tokenizer.count_many([text_of(m.get("content")) for m in messages])
    return CONVERSATION_OVERHEAD + sum(
        MESSAGE_OVERHEAD + count + tokenizer.role_cost(message["role"])
        for message, count in zip(messages, counts, strict=True))
