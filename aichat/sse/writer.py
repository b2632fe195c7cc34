"""SSEWriter: stream headers (docs/api.md §5.6), one write per event, heartbeats, clean close.

Every event goes out in a single `write` so that no `: ping` can land inside it and a reader
that splits on network chunks (the existing front end does) always sees whole events. A write
to a client that has gone marks the writer closed and calls `on_gone` once, so the work behind
the stream can be cancelled even when aiohttp does not cancel the handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiohttp import web

from aichat.http import jsonfast

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
PING = b": ping\n\n"
# The per-delta events, built without a dict: the hottest path of a relayed stream.
_TEXT_PREFIX = {kind: b'data: {"type":"' + kind.encode() + b'","content":'
                for kind in ("content", "reasoning")}


def encode_event(payload: dict[str, Any]) -> bytes:
    """`data: <compact one-line JSON>\\n\\n` (JSON escapes newlines, so it stays one line)."""
    return b"data: " + jsonfast.dumps(payload) + b"\n\n"


def encode_text(kind: str, text: str) -> bytes:
    """A `content`/`reasoning` event: the bytes of encode_event({"type": kind, "content": text})."""
    return _TEXT_PREFIX[kind] + jsonfast.dumps(text) + b"}\n\n"


class SSEWriter:
    def __init__(self, request: web.Request, heartbeat_s: float,
                 on_gone: Callable[[], None] | None = None) -> None:
        self._request = request
        self._heartbeat_s = heartbeat_s
        self._on_gone = on_gone
        self._response = web.StreamResponse(status=200, headers=HEADERS)
        self._heartbeat: asyncio.Task[None] | None = None
        self.closed = False
        self.started = False

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def start(self) -> None:
        await self._response.prepare(self._request)
        self.started = True
        self._heartbeat = asyncio.create_task(self._beat(), name="sse-heartbeat")

    async def send(self, *payloads: dict[str, Any]) -> bool:
        """One or more events, written together (each one whole, so never split)."""
        return await self.write(b"".join(encode_event(p) for p in payloads))

    async def text(self, kind: str, text: str) -> bool:
        return await self.write(encode_text(kind, text))

    async def write(self, data: bytes) -> bool:
        """Write one whole event; False once the client is gone."""
        if self.closed:
            return False
        try:
            await self._response.write(data)
        except (ConnectionError, RuntimeError):
            self._gone()
            return False
        return True

    def backlog(self) -> int:
        """Bytes written but not yet taken by the client's connection."""
        transport = self._request.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            if self._on_gone is not None:
                self._on_gone()

    async def _beat(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._heartbeat_s)
            transport = self._request.transport
            if transport is None or transport.is_closing():
                self._gone()
                return
            await self.write(PING)

    async def close(self) -> None:
        """Stop the heartbeat and end the body; safe to call more than once."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait([self._heartbeat])  # never re-raises the beat's cancellation
            self._heartbeat = None
        if self.started and not self.closed:
            self.closed = True
            try:
                await self._response.write_eof()
            except (ConnectionError, RuntimeError):
                pass

    async def __aenter__(self) -> SSEWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
