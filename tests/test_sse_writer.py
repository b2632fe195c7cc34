"""The SSE writer alone, on a bare aiohttp app: headers, whole events, heartbeats, clean ends."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from aichat.sse import SSEWriter, encode_event, encode_text

from .helpers import SSEStream


def test_encode_event_is_one_compact_line():
    data = encode_event({"type": "content", "content": "a\nb\r\nc \u2028 é"})
    assert data.startswith(b"data: {") and data.endswith(b"}\n\n")
    assert data.count(b"\n") == 2 and b"\r" not in data
    assert b'"type":"content"' in data and "é".encode() in data


def test_encode_text_is_the_same_event_built_faster():
    for kind in ("content", "reasoning"):
        for text in ("a", "line\nbreak", '"quoted"', "é\x1b😀"):
            assert encode_text(kind, text) == encode_event({"type": kind, "content": text})


async def test_headers_heartbeats_and_close(aiohttp_client):
    state = {}

    async def handler(request):
        writer = SSEWriter(request, heartbeat_s=0.05)
        state["writer"] = writer
        async with writer:
            await writer.send({"type": "start"})
            await state["release"].wait()
            await writer.send({"type": "complete"})
        state["heartbeat_after_close"] = writer._heartbeat
        return writer.response

    state["release"] = asyncio.Event()
    app = web.Application()
    app.router.add_post("/sse", handler)
    client = await aiohttp_client(app)
    async with client.post("/sse") as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache, no-transform"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in response.headers
        assert "Content-Encoding" not in response.headers
        reader = SSEStream(response)
        assert (await reader.next())["type"] == "start"
        # Pings arrive while nothing else happens; each is its own whole block.
        while reader.pings < 3:
            block = await response.content.readuntil(b"\n\n")
            assert block == b": ping\n\n"
            reader.pings += 1
        state["release"].set()
        assert (await reader.next())["type"] == "complete"
        assert await reader.next() is None
    assert state["heartbeat_after_close"] is None
    assert state["writer"].closed


async def test_client_gone_is_noticed_and_reported_once():
    """Without aiohttp's handler cancellation the writer itself must notice the hang-up."""
    gone = asyncio.Event()
    calls = []
    done = asyncio.Event()

    async def handler(request):
        writer = SSEWriter(request, heartbeat_s=0.02,
                           on_gone=lambda: (calls.append(1), gone.set()))
        await writer.start()
        await writer.send({"type": "start"})
        try:
            await asyncio.wait_for(gone.wait(), 5)
            assert await writer.send({"type": "late"}) is False  # nothing on a closed stream
        finally:
            await writer.close()
            done.set()
        return writer.response

    app = web.Application()
    app.router.add_post("/sse", handler)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"http://127.0.0.1:{port}/sse")
            await response.content.readuntil(b"\n\n")
            response.close()
            await asyncio.wait_for(done.wait(), 5)
    finally:
        await runner.cleanup()
    assert calls == [1]


async def test_close_is_idempotent_and_safe_before_start(aiohttp_client):
    async def handler(request):
        writer = SSEWriter(request, heartbeat_s=1)
        await writer.close()  # never started: nothing to do
        await writer.start()
        await writer.close()
        await writer.close()
        return writer.response

    app = web.Application()
    app.router.add_get("/sse", handler)
    client = await aiohttp_client(app)
    async with client.get("/sse") as response:
        assert response.status == 200 and await response.read() == b""
