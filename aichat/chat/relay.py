"""Relaying a round to an HTTP client as a stream, whatever the event format."""

from __future__ import annotations

from typing import Callable, Mapping

from aiohttp import web

from aichat.chat.broadcast import Broadcast
from aichat.chat.registry import PERSIST_WAIT_S
from aichat.chat.round import Round
from aichat.chat.sink import Sink
from aichat.sse import SSEWriter


async def begin(request: web.Request, round_: Round,
                sink: Callable[[SSEWriter], Sink] | None = None,
                headers: Mapping[str, str] | None = None) -> SSEWriter | None:
    """Send the headers (the stream's and `headers`), then start the round with its events
    going to `sink(writer)`; by default (an /api chat stream) numbered and followable
    (chat/broadcast.py).

    None if the client left before the headers went out (the round is not started).
    """
    writer = SSEWriter(request, round_.settings.heartbeat_s, on_gone=round_.client_gone)
    if headers:
        writer.response.headers.update(headers)
    try:
        await writer.start()
    except (ConnectionError, RuntimeError):
        return None
    if sink is None:
        round_.broadcast = Broadcast(writer)
        round_.sink = round_.broadcast
    else:
        round_.sink = sink(writer)
    round_.start()
    return writer


async def finish(round_: Round, writer: SSEWriter) -> web.StreamResponse:
    """Follow the round to its end, then close the stream (heartbeat stopped, body ended)."""
    try:
        await round_.follow(PERSIST_WAIT_S)
    finally:
        await writer.close()
    return writer.response
