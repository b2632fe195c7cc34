"""Where a round's events go.

A round speaks the /api event vocabulary (docs/api.md §5.6). The /api stream's sink numbers
each event and writes it to the client and its followers (chat/broadcast.py, §5.9); /v1 turns
the events into OpenAI's chunks (v1/sink.py); a non-streamed round sends them nowhere and is
read when it is done.
"""

from __future__ import annotations

from typing import Any, Protocol

# Small events survive readers that split on network chunks: a character costs at most six
# bytes of JSON (a \u001b-style escape), so 170 characters stay within 1 KiB.
PIECE_CHARS = 170


class Sink(Protocol):
    async def send(self, *payloads: dict[str, Any]) -> bool:
        """Whole events in one write: a reader splitting on network chunks still sees them
        whole, and the opening and closing bursts cost one write each."""

    async def text(self, kind: str, text: str) -> bool:
        """One `content` or `reasoning` event of at most PIECE_CHARS characters."""


class _Nowhere:
    async def send(self, *payloads: dict[str, Any]) -> bool:
        return True

    async def text(self, kind: str, text: str) -> bool:
        return True


NOWHERE: Sink = _Nowhere()


async def pieces(sink: Sink, kind: str, text: str) -> None:
    """Text longer than PIECE_CHARS as several events (callers check the length first, so a
    usual delta costs no extra call)."""
    for i in range(0, len(text), PIECE_CHARS):
        await sink.text(kind, text[i:i + PIECE_CHARS])
