"""A chat stream's events, numbered, for its client and anyone who follows it (docs/api.md §5.9).

Each event of a round of /api/chat/stream or /api/chat/regenerate goes out once encoded, with
the SSE id `<generation>:<sequence>` (sequence from 1), to every writer attached: the client
that started the round, then the followers of GET /api/chat/sessions/:id/stream. What a late
follower needs is kept compactly: the text events as counts into the round's own text parts
(the strings themselves are the reply's), the other events whole, so a round holds at most a
few bytes per event beyond its reply, which `max_reply_chars` bounds.
"""

from __future__ import annotations

import secrets
from array import array
from typing import Any

from aichat.sse.writer import SSEWriter, encode_event, encode_text

MAX_FOLLOWERS = 16  # per round; more: 429
MAX_KEPT_EVENTS = 256  # non-text events kept for a replay (a hostile upstream's usage chunks)
FOLLOWER_BACKLOG = 1024 * 1024  # bytes a follower may leave unread before it is dropped


class Broadcast:
    def __init__(self, writer: SSEWriter) -> None:
        self.generation = secrets.token_urlsafe(9)
        self._prefix = f"id: {self.generation}:".encode()
        self.writer = writer  # the client that started the round
        self.followers: list[SSEWriter] = []
        self.seq = 0
        self._parts: dict[str, list[str]] = {"content": [], "reasoning": []}
        # After event n: how many content and reasoning parts had been sent (index 0: none).
        self._counts = {"content": array("i", [0]), "reasoning": array("i", [0])}
        self._kept: list[tuple[int, dict[str, Any]]] = []  # the other events, by number
        self._last_text = 0  # the number of the latest text event

    def _id(self) -> bytes:
        return self._prefix + str(self.seq).encode() + b"\n"

    def _count(self) -> None:
        for kind, counts in self._counts.items():
            counts.append(len(self._parts[kind]))

    async def send(self, *payloads: dict[str, Any]) -> bool:
        chunks = []
        for payload in payloads:
            self.seq += 1
            self._count()
            if payload.get("type") != "usage" or len(self._kept) < MAX_KEPT_EVENTS:
                self._kept.append((self.seq, payload))
            chunks.append(self._id() + encode_event(payload))
        return await self._write(b"".join(chunks))

    async def text(self, kind: str, text: str) -> bool:
        self.seq += 1
        self._last_text = self.seq
        self._parts[kind].append(text)
        self._count()
        return await self._write(self._id() + encode_text(kind, text))

    async def _write(self, data: bytes) -> bool:
        written = await self.writer.write(data)
        if self.followers:
            for follower in list(self.followers):
                if follower.backlog() > FOLLOWER_BACKLOG or not await follower.write(data):
                    self.unfollow(follower)
        return written

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
            counts = self._counts[kind]
            text = "".join(self._parts[kind][counts[start]:counts[end]])
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
        mark = self._prefix + str(end).encode() + b"\n"
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
        return self._prefix + str(seq).encode() + b"\n" + encode_event(payload)
