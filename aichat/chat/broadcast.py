"""A chat stream's events, numbered, for its client and anyone who follows it (docs/api.md §5.9).

Each event of a round of /api/chat/stream or /api/chat/regenerate goes out once encoded, with
the SSE id `<generation>:<sequence>` (sequence from 1), to every writer attached: the client
that started the round, then the followers of GET /api/chat/sessions/:id/stream. What a late
follower needs is kept compactly: each text event as its part of the text and its number (the
strings themselves are the reply's), the other events whole, so a round holds a list slot and
four bytes per text event beyond its reply, which `max_reply_chars` bounds.
"""

from __future__ import annotations

import secrets
from array import array
from bisect import bisect_right
from typing import Any

from aichat.sse.writer import SSEWriter, encode_event, encode_text

MAX_FOLLOWERS = 16  # per round; more: 429
MAX_KEPT_EVENTS = 256  # other events kept for a replay (a hostile upstream's usage chunks)
FOLLOWER_BACKLOG = 1024 * 1024  # bytes a follower may leave unread before it is dropped


def _ending(payload: dict[str, Any]) -> bool:
    """An event of the round's end (kept past MAX_KEPT_EVENTS: a follower must get it)."""
    return payload.get("type") in ("end", "complete", "error") or "assistantMessageId" in payload


class Broadcast:
    def __init__(self, writer: SSEWriter) -> None:
        self.generation = secrets.token_urlsafe(9)
        self._prefix = f"id: {self.generation}:".encode()
        self.writer = writer  # the client that started the round
        self.followers: list[SSEWriter] = []
        self.seq = 0
        self._parts: dict[str, list[str]] = {"content": [], "reasoning": []}
        # The number of the event that carried each part (ascending: found by bisection).
        self._numbers = {"content": array("i"), "reasoning": array("i")}
        self._kept: list[tuple[int, dict[str, Any]]] = []  # the other events, by number
        self._last_text = 0  # the number of the latest text event

    async def send(self, *payloads: dict[str, Any]) -> bool:
        chunks = []
        for payload in payloads:
            self.seq += 1
            if len(self._kept) < MAX_KEPT_EVENTS or _ending(payload):
                self._kept.append((self.seq, payload))
            chunks.append(self._encoded(self.seq, payload))
        data = b"".join(chunks)
        written = await self.writer.write(data)
        if self.followers:
            await self._to_followers(data)
        return written

    async def text(self, kind: str, text: str) -> bool:
        # The hottest path of a relayed stream: a few appends and one formatting.
        self.seq = seq = self.seq + 1
        self._last_text = seq
        self._parts[kind].append(text)
        self._numbers[kind].append(seq)
        data = b"%b%d\n%b" % (self._prefix, seq, encode_text(kind, text))
        written = await self.writer.write(data)
        if self.followers:
            await self._to_followers(data)
        return written

    async def _to_followers(self, data: bytes) -> None:
        for follower in list(self.followers):
            if follower.backlog() > FOLLOWER_BACKLOG or not await follower.write(data):
                self.unfollow(follower)

    # --- followers ---

    def follow(self, writer: SSEWriter, after: int | None) -> bytes:
        """Attach `writer`; what it must be sent first, before any later event: the events
        after number `after`, or (None) a snapshot of the round so far. Synchronous, so no
        event can fall between the two."""
        self.followers.append(writer)
        return self._snapshot() if after is None else self._since(min(after, self.seq))

    def unfollow(self, writer: SSEWriter) -> None:
        if writer in self.followers:
            self.followers.remove(writer)

    def _text_since(self, start: int, end: int) -> list[tuple[str, str]]:
        """The text of events start+1..end, one piece per kind (reasoning first)."""
        texts = []
        for kind in ("reasoning", "content"):
            numbers = self._numbers[kind]
            first, last = bisect_right(numbers, start), bisect_right(numbers, end)
            text = "".join(self._parts[kind][first:last])
            if text:
                texts.append((kind, text))
        return texts

    def _since(self, after: int) -> bytes:
        """Events after+1..now; a run of text events between two other events merged into
        one per kind, numbered as the last of the run."""
        chunks, start = [], after
        for seq, payload in self._kept:
            if seq <= after:
                continue
            chunks += self._merged(start, seq - 1)
            chunks.append(self._encoded(seq, payload))
            start = seq
        chunks += self._merged(start, self.seq)
        return b"".join(chunks)

    def _merged(self, start: int, end: int) -> list[bytes]:
        if end <= start:
            return []
        mark = b"%b%d\n" % (self._prefix, end)
        return [mark + encode_text(kind, text) for kind, text in self._text_since(start, end)]

    def _snapshot(self) -> bytes:
        """The `start` event, the whole text so far (one event per kind, numbered as the
        last text event), then any event sent since (the closing ones, if it is ending)."""
        chunks = [self._encoded(seq, payload) for seq, payload in self._kept[:1]
                  if payload.get("type") == "start"]
        chunks += self._merged(0, self._last_text)
        chunks += [self._encoded(seq, payload) for seq, payload in self._kept
                   if seq > max(self._last_text, 1)]
        return b"".join(chunks)

    def _encoded(self, seq: int, payload: dict[str, Any]) -> bytes:
        return b"%b%d\n%b" % (self._prefix, seq, encode_event(payload))
