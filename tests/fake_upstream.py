"""A scripted OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1.

Tests queue a `Reply` per expected request (or set `default`); the server plays it: streams N
tokens with a delay, waits before the headers, fails with 429/5xx, stalls, drops the connection,
sends junk, reasoning or usage, or answers a non-streamed request. It records each request it
saw and whether the client went away before the reply was over.

Also runnable on its own for the benchmarks: `python -m tests.fake_upstream --port 9000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_PATH = "/v1/chat/completions"
_BENCH_MODEL = re.compile(r"bench-(\d{1,5})x(\d{1,5})")


@dataclass
class Reply:
    tokens: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    delay: float = 0.0  # between chunks
    headers_delay: float = 0.0  # before the response headers
    status: int = 200
    error_body: str = '{"error": {"message": "upstream refused"}}'
    retry_after: str | None = None
    reasoning: list[str] = field(default_factory=list)  # sent before the tokens
    reasoning_field: str = "reasoning_content"
    usage: dict[str, Any] | None = None  # a final usage chunk
    finish_reason: str | None = "stop"
    done: bool = True  # end with data: [DONE]
    stall_after: int | None = None  # after N tokens go silent until the client leaves
    drop_after: int | None = None  # after N tokens cut the connection
    junk: bool = False  # malformed lines between the events
    raw_body: bytes | None = None  # send exactly this body (status 200, event-stream)
    split: int | None = None  # write the body in pieces of this many bytes
    crlf: bool = False  # CRLF line endings
    no_space: bool = False  # "data:{...}" without the space
    content: str | None = None  # for stream=false requests (default: the tokens joined)
    huge: int | None = None  # stream this many characters of text in 4 KiB deltas instead
    no_newline: int | None = None  # one `data:` line of this many letters that never ends


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class FakeUpstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.requests: list[Seen] = []
        self._arrived = asyncio.Condition()
        self._bench_replies: dict[tuple[int, int], Reply] = {}

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(API_PATH, self._handle)
        app.router.add_post("/v1/redirect", self._redirect)
        app.router.add_get("/health", self._health)
        return app

    async def wait_requests(self, count: int, timeout: float = 5.0) -> list[Seen]:
        """Until `count` requests have arrived."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    def _default_for(self, body: dict[str, Any]) -> Reply:
        """`model: "bench-<tokens>x<gap ms>"` picks the stream shape (one process, many loads)."""
        match = _BENCH_MODEL.fullmatch(str(body.get("model", "")))
        if not match:
            return self.default
        tokens, gap_ms = int(match.group(1)), int(match.group(2))
        key = (tokens, gap_ms)
        if key not in self._bench_replies:
            self._bench_replies[key] = Reply(tokens=[f"tok{i} " for i in range(tokens)],
                                             delay=gap_ms / 1000)
        return self._bench_replies[key]

    async def _health(self, request: web.Request) -> web.Response:
        """A trivial JSON answer: the benchmark's floor for a plain request."""
        return web.json_response({"success": True, "data": {"status": "healthy"}})

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/elsewhere")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen = Seen(body, dict(request.headers), time.monotonic())
        async with self._arrived:
            self.requests.append(seen)
            self._arrived.notify_all()
        reply = self.replies.popleft() if self.replies else self._default_for(body)
        try:
            return await self._play(request, reply, seen)
        except asyncio.CancelledError:
            seen.disconnected.set()  # aichat hung up while we were silent
            raise
        except ConnectionError:
            seen.disconnected.set()  # aichat hung up while we were writing
            return web.Response(status=499)  # never sent: the connection is gone
        finally:
            seen.finished.set()

    async def _play(self, request: web.Request, reply: Reply, seen: Seen) -> web.StreamResponse:
        if reply.headers_delay:
            await asyncio.sleep(reply.headers_delay)
        if reply.status != 200:
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            return web.Response(status=reply.status, text=reply.error_body, headers=headers,
                                content_type="application/json")
        if not seen.stream:
            return self._complete(reply)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if reply.raw_body is not None:
            await self._write(response, reply, reply.raw_body)
            await response.write_eof()
            return response
        if reply.huge is not None or reply.no_newline is not None:
            return await self._flood(response, reply)
        for line in self._reasoning_lines(reply):
            await self._write(response, reply, line)
            await self._pause(reply)
        for i, token in enumerate(reply.tokens):
            if reply.stall_after is not None and i == reply.stall_after:
                await asyncio.sleep(3600)  # until aichat hangs up (cancels this handler)
            if reply.drop_after is not None and i == reply.drop_after:
                request.transport.close()  # no terminating chunk: the client sees a cut body
                return response
            if reply.junk:
                await self._write(response, reply, b"data: {not json\n\n")
            await self._write(response, reply, self._event(reply, {
                "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}))
            await self._pause(reply)
        if reply.finish_reason is not None:
            await self._write(response, reply, self._event(reply, {
                "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]}))
        if reply.usage is not None:
            await self._write(response, reply, self._event(reply, {"choices": [],
                                                                   "usage": reply.usage}))
        if reply.done:
            await self._write(response, reply, self._line(reply, b"data: [DONE]"))
        await response.write_eof()
        return response

    async def _flood(self, response: web.StreamResponse, reply: Reply) -> web.StreamResponse:
        """A hostile provider: a reply of `huge` characters, or a line that never ends."""
        if reply.no_newline is not None:
            await response.write(b'data: {"choices":[{"delta":{"content":"')
            for sent in range(0, reply.no_newline, 65536):
                await response.write(b"a" * min(65536, reply.no_newline - sent))
        else:
            chunk = self._event(reply, {"choices": [{"index": 0, "delta": {
                "content": "x" * 4096}, "finish_reason": None}]})
            for _ in range(-(-(reply.huge or 0) // 4096)):
                await response.write(chunk)
            await response.write(self._line(reply, b"data: [DONE]"))
        await response.write_eof()
        return response

    def _reasoning_lines(self, reply: Reply) -> list[bytes]:
        return [self._event(reply, {"choices": [{"index": 0, "delta": {
            reply.reasoning_field: text}, "finish_reason": None}]}) for text in reply.reasoning]

    @staticmethod
    async def _pause(reply: Reply) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)

    def _event(self, reply: Reply, payload: dict[str, Any]) -> bytes:
        prefix = b"data:" if reply.no_space else b"data: "
        return self._line(reply, prefix + json.dumps(payload).encode())

    @staticmethod
    def _line(reply: Reply, line: bytes) -> bytes:
        end = b"\r\n" if reply.crlf else b"\n"
        return line + end + end

    @staticmethod
    async def _write(response: web.StreamResponse, reply: Reply, data: bytes) -> None:
        if not reply.split:
            await response.write(data)
            return
        for i in range(0, len(data), reply.split):
            await response.write(data[i:i + reply.split])
            await asyncio.sleep(0)  # let each piece leave as its own read

    @staticmethod
    def _complete(reply: Reply) -> web.Response:
        content = reply.content if reply.content is not None else "".join(reply.tokens)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reply.reasoning:
            message[reply.reasoning_field] = "".join(reply.reasoning)
        payload: dict[str, Any] = {"id": "cmpl-fake", "object": "chat.completion",
                                   "choices": [{"index": 0, "message": message,
                                                "finish_reason": reply.finish_reason}]}
        if reply.usage is not None:
            payload["usage"] = reply.usage
        return web.json_response(payload)


class _Forgetful(list):
    """A request log for long benchmark runs: counts, keeps nothing."""

    seen = 0

    def append(self, item: Any) -> None:
        self.seen += 1

    def __len__(self) -> int:
        return self.seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Scripted fake OpenAI-compatible upstream. The model name "
                    "bench-<tokens>x<gap ms> picks the stream; other names get --tokens/--gap-ms.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per streamed reply")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="gap between tokens")
    args = parser.parse_args()
    fake = FakeUpstream()
    fake.default = Reply(tokens=[f"tok{i} " for i in range(args.tokens)],
                         delay=args.gap_ms / 1000)
    fake.requests = _Forgetful()
    web.run_app(fake.app(), host=args.host, port=args.port, print=None, backlog=2048,
                handler_cancellation=True, access_log=None, loop=_loop())


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
