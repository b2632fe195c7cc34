"""A /v1 round: the client's own messages, relayed by the same engine, accounted per user."""

from __future__ import annotations

from typing import Any

from aichat.http import jsonfast
from aichat.chat.round import Outcome, Round
from aichat.store import api_keys
from aichat.store.usage import Usage


class ApiRound(Round):
    """No chat session: nothing is stored but one api_usage row, and no checkpoints."""

    def __init__(self, *, messages: list[dict[str, Any]], options: dict[str, Any],
                 api_key_id: int | None, **kwargs: Any) -> None:
        super().__init__(session_id=None, user_message_id=None, user_content="",
                         new_message={"role": "user", "content": []}, **kwargs)
        self.client_messages = messages
        self.options = options  # the client's other parameters, passed through
        self.api_key_id = api_key_id

    def _payload(self, stream: bool) -> dict[str, Any]:
        payload = {**self.options, "model": self.model["name"],
                   "messages": self.client_messages, "stream": stream}
        if not stream:
            payload.pop("stream_options", None)
        return payload

    def _body(self, stream: bool) -> bytes:
        return memoryview(jsonfast.dumps(self._payload(stream))).tobytes()

    def _has_images(self) -> bool:
        return any(isinstance(m.get("content"), list) for m in self.client_messages)

    def checkpoint_row(self) -> tuple | None:
        return None

    async def _forget(self) -> None:
        pass

    async def _persist(self, outcome: Outcome, text: str, reasoning: str | None, usage: Usage,
                       text_tokens: int) -> int | None:
        await self.db.run(api_keys.add_usage, self.user_id, self.api_key_id, self.model["name"],
                          self._provider_host(), outcome.status, usage)
        return None
