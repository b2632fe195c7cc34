"""What a round asks of the provider: the model, the messages and the rest of the body."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aichat.http import jsonfast
from aichat.store import prices
from aichat.upstream.client import Target


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One round's request, the same for every attempt (streamed or the fallback).

    `model` is a `models.upstream` row; its `api_key` may be the DecryptError of a key that
    did not decrypt, which `target()` raises for the round to report.
    """

    model: dict[str, Any]
    messages: list[dict[str, Any]]
    options: dict[str, Any]  # the body's other fields: our temperature, or a /v1 client's own
    has_images: bool
    prompt_tokens: int  # our estimate for `messages`, used when the provider reports none
    context_limit: int | None = None  # the budget the messages were fitted to (chat rounds)

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def provider_host(self) -> str | None:
        return Target(self.model["api_url"], "", self.model_name).host

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int) -> int | None:
        """The round's cost at the model's prices when the round started (store/prices.py);
        None without both prices."""
        return prices.cost_nanos(prompt_tokens, completion_tokens,
                                 self.model.get("input_price_micros"),
                                 self.model.get("output_price_micros"))

    @property
    def user_url(self) -> bool:
        """A user-entered URL, so the upstream URL policy applies to it."""
        return self.model.get("user_id") is not None

    def target(self) -> Target:
        key = self.model["api_key"]
        if isinstance(key, Exception):  # the stored key did not decrypt
            raise key
        return Target(self.model["api_url"], key, self.model_name)

    def body(self, stream: bool) -> bytes:
        payload = {"model": self.model_name, "messages": self.messages, "stream": stream,
                   **self.options}
        if not stream:
            payload.pop("stream_options", None)
        # Kept for the retry and the fallback: an exact-size copy, since orjson's result keeps
        # its 4 KiB working buffer (measured with tracemalloc: 4 KiB per running round).
        return memoryview(jsonfast.dumps(payload)).tobytes()

    async def encode(self, stream: bool) -> bytes:
        # Image bodies run to megabytes: serialise those off the loop.
        if self.has_images:
            return await asyncio.to_thread(self.body, stream)
        return self.body(stream)
