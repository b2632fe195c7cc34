"""The upstream attempts of one round (docs/api.md §5.5), relayed to its sink as they arrive.

A stream that fails before anything was relayed is retried once (after a short wait; a 429
waits for its Retry-After when that fits the budget); if it fails again, or cannot be retried,
one non-streamed call is the fallback. Once text has reached the client nothing is repeated:
the error ends the round. A refused URL (the policy) is final at once. All of it runs within
the round's total budget; the upstream client enforces the idle limit per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from aichat.chat.call import UpstreamCall
from aichat.chat.outcome import ErrorKind
from aichat.chat.reply import Reply
from aichat.chat.sink import PIECE_CHARS, Sink, pieces
from aichat.settings.system import StreamSettings
from aichat.upstream import client as provider
from aichat.upstream import netpolicy
from aichat.upstream.client import CONTENT, FINISH, REASONING, USAGE, ProviderError, Target

if TYPE_CHECKING:
    from aichat.metrics.catalog import Metrics


# A provider that streams as fast as we read never lets a read wait, so the relay would keep
# the loop to itself: it yields once per this many characters (one health check's worth).
_PAUSE_CHARS = 64 * 1024

# Failures no retry or fallback can mend.
_FINAL = (ErrorKind.BLOCKED, ErrorKind.TOO_LONG)


@dataclass(frozen=True, slots=True)
class Waits:
    retry_s: float
    rate_limit_s: float  # a 429 without a usable Retry-After


class Attempts:
    def __init__(self, http: aiohttp.ClientSession, call: UpstreamCall,
                 settings: StreamSettings, waits: Waits, reply: Reply, sink: Sink,
                 metrics: Metrics | None = None) -> None:
        self.http, self.call, self.settings, self.waits = http, call, settings, waits
        self.reply, self.sink = reply, sink
        self.metrics = metrics
        self._deadline = 0.0

    def _failed(self, error: ProviderError) -> None:
        if self.metrics is not None:
            self.metrics.upstream_failed(self.call.provider_host, str(error.kind))

    def _retrying(self) -> None:
        if self.metrics is not None:
            self.metrics.retried(self.call.provider_host)

    async def run(self, streamed: bool) -> None:
        """Fill the reply; raises TimeoutError (the budget), ProviderError or DecryptError."""
        self._deadline = asyncio.get_running_loop().time() + self.settings.timeout_s
        async with asyncio.timeout_at(self._deadline):
            target = self.call.target()
            if self.call.user_url:
                policy = self.settings.policy.for_host(URL(target.url).host)
                netpolicy.current.set(netpolicy.Guard(policy) if policy else None)
            if streamed:
                await self._stream_with_retry(target)
            else:
                await self._complete(target, retry=True)

    async def _stream_with_retry(self, target: Target) -> None:
        body = await self.call.encode(True)
        retried = False
        while True:
            try:
                await self._stream(target, body)
                self.reply.stream_ended = True
                return
            except ProviderError as e:
                self._failed(e)
                if self.reply.relayed or e.kind in _FINAL:
                    raise
                if e.retryable and not retried:
                    retried = True
                    self._retrying()
                    await asyncio.sleep(self._retry_wait(e))
                    continue
                if self.metrics is not None:
                    self.metrics.fell_back(self.call.provider_host)
                await self._fallback(target, e)
                return

    def _retry_wait(self, error: ProviderError) -> float:
        if error.status == 429:
            time_left = self._deadline - asyncio.get_running_loop().time()
            if error.retry_after is not None and error.retry_after <= time_left:
                return error.retry_after
            return self.waits.rate_limit_s
        return self.waits.retry_s

    async def _stream(self, target: Target, body: bytes) -> None:
        """One streamed attempt. The hot path of the relay: per delta, one append, one
        subtraction for the size cap and one write, the piece split only for deltas longer
        than PIECE_CHARS."""
        reply, sink = self.reply, self.sink
        text_parts, reasoning_parts = reply.text_parts, reply.reasoning_parts
        result = provider.StreamResult()
        finish_seen = False
        room = self._room()
        pause_at = max(room - _PAUSE_CHARS, 0)  # >= 0, so the cap is checked here too
        events = provider.stream(self.http, target, body, self.settings.max_idle_s, result,
                                 self.settings.max_line_bytes)
        sent_at = asyncio.get_running_loop().time() if self.metrics is not None else None
        async with contextlib.aclosing(events):
            async for kind, value in events:
                if kind is CONTENT or kind is REASONING:  # "content" or "reasoning"
                    if sent_at is not None:  # the first text: once per attempt
                        self._first_text(sent_at)
                        sent_at = None
                    size = len(value)
                    room -= size
                    if room < pause_at:
                        if room < 0:
                            await self._overflow(kind, value, room)
                        pause_at = max(room - _PAUSE_CHARS, 0)
                        await asyncio.sleep(0)
                    (text_parts if kind is CONTENT else reasoning_parts).append(value)
                    await (sink.text(kind, value) if size <= PIECE_CHARS
                           else pieces(sink, kind, value))
                elif kind is FINISH:
                    finish_seen = True
                    reply.finish_reason = value
                    await sink.send({"type": "stop", "reason": value})
                elif kind is USAGE:
                    reply.usage = value
                    if self.settings.usage_emit:
                        await sink.send({"type": "usage", "usage": value})
        if not reply.relayed and not result.done_marker and not finish_seen:
            reason = "no usable data" if result.junk_lines else "an empty stream"
            raise ProviderError(f"AI API returned {reason}", ErrorKind.GARBAGE)

    def _first_text(self, sent_at: float) -> None:
        assert self.metrics is not None
        self.metrics.first_token.observe(asyncio.get_running_loop().time() - sent_at)

    async def _fallback(self, target: Target, first: ProviderError) -> None:
        """Before any content: ask once more without streaming and relay that answer."""
        if self._deadline - asyncio.get_running_loop().time() <= 0:
            raise first
        try:
            await self._complete(target, retry=False)
        except ProviderError as e:
            if e.kind in _FINAL:
                raise
            raise first from None
        if not self.reply.text_parts:
            raise first

    async def _complete(self, target: Target, *, retry: bool) -> None:
        body = await self.call.encode(False)
        retried = not retry
        while True:
            try:
                completion = await provider.complete(self.http, target, body,
                                                     self.settings.max_idle_s)
                break
            except ProviderError as e:
                self._failed(e)
                if not e.retryable or retried:
                    raise
                retried = True
                self._retrying()
                await asyncio.sleep(self._retry_wait(e))
        reply = self.reply
        if completion.usage is not None:
            reply.usage = completion.usage
        reply.finish_reason = completion.finish_reason
        room = self._room()
        for kind, text in (("reasoning", completion.reasoning), ("content", completion.content)):
            if not text:
                continue
            room -= len(text)
            if room < 0:
                await self._overflow(kind, text, room)
            (reply.reasoning_parts if kind == "reasoning" else reply.text_parts).append(text)
            await pieces(self.sink, kind, text)

    def _room(self) -> int:
        """Characters the reply may still grow by."""
        reply = self.reply
        used = sum(map(len, reply.text_parts)) + sum(map(len, reply.reasoning_parts))
        return self.settings.max_reply_chars - used

    async def _overflow(self, kind: str, text: str, room: int) -> None:
        """The reply reached max_reply_chars: relay what still fits of `text`, then end the
        round with an error (what was relayed is kept, and counted)."""
        fits = text[:len(text) + room]
        if fits:
            (self.reply.reasoning_parts if kind == "reasoning"
             else self.reply.text_parts).append(fits)
            await pieces(self.sink, kind, fits)
        raise ProviderError(f"The reply exceeded {self.settings.max_reply_chars} characters",
                            ErrorKind.TOO_LONG)
