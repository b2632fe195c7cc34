"""Round events turned into OpenAI's streaming format (chat.completion.chunk, then [DONE])."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aichat.sse import SSEWriter, encode_event

DONE = b"data: [DONE]\n\n"


class OpenAISink:
    def __init__(self, writer: SSEWriter, model: str, include_usage: bool) -> None:
        self.writer = writer
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self._role_sent = False
        self._finish_sent = False
        self._usage: dict[str, int] | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None,
               usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [] if usage is not None else [
                {"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            body["usage"] = usage
        return encode_event(body)

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self._role_sent:
            self._role_sent = True
            return {"role": "assistant", **delta}
        return delta

    async def text(self, kind: str, text: str) -> bool:
        field = "content" if kind == "content" else "reasoning_content"
        return await self.writer.write(self._chunk(self._delta({field: text})))

    async def send(self, *payloads: dict[str, Any]) -> bool:
        out: list[bytes] = []
        for event in payloads:
            kind = event["type"]
            if kind == "stop" and "assistantMessageId" not in event:  # the provider's finish
                out.append(self._chunk(self._delta({}), event["reason"]))
                self._finish_sent = True
            elif kind == "usage" and "completion_tokens" in event["usage"]:
                usage = event["usage"]
                self._usage = {k: usage[k] for k in
                               ("prompt_tokens", "completion_tokens", "total_tokens")}
            elif kind in ("complete", "stop"):  # the end: finished, or stopped
                if not self._finish_sent:
                    out.append(self._chunk(self._delta({}), "stop"))
                if self.include_usage and self._usage is not None:
                    out.append(self._chunk({}, usage=self._usage))
                out.append(DONE)
            elif kind == "error":
                out.append(encode_event({"error": {"message": event["error"],
                                                   "type": "upstream_error", "param": None,
                                                   "code": None}}))
                out.append(DONE)
        return await self.writer.write(b"".join(out)) if out else True
