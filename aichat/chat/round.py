"""One round: a reply generated for a user message, relayed as events and saved however it ends.

A round runs in its own task, so a stop request, a new round on the same session, a deleted
session or shutdown can cancel it, and the HTTP handler only waits for it. Whatever ends it
(success, error, stop, client gone), `_finish` saves the text relayed so far with its status
and one usage row, then sends the final usage and exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from yarl import URL

from aichat.http import jsonfast
from aichat.upstream import netpolicy
from aichat.security.crypto import DecryptError
from aichat.settings.system import StreamSettings
from aichat.store import checkpoints
from aichat.store import messages as messages_store
from aichat.store import usage as usage_store
from aichat.store.db import Database
from aichat.store.usage import Usage
from aichat.upstream import client as provider
from aichat.chat.context import Context
from aichat.upstream.client import CONTENT, FINISH, REASONING, USAGE, ProviderError, Target
from aichat.chat.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Small events survive readers that split on network chunks: a character costs at most six
# bytes of JSON (a \u001b-style escape), so 170 characters stay within 1 KiB.
PIECE_CHARS = 170
TEMPERATURE = 0.7


class Sink(Protocol):
    async def send(self, *payloads: dict[str, Any]) -> bool: ...

    async def text(self, kind: str, text: str) -> bool: ...


@dataclass(slots=True)
class Outcome:
    status: str  # complete | stopped | error
    error: str | None = None
    kind: str | None = None  # for errors: timeout, status, network, idle, drop, garbage, ...
    upstream_status: int | None = None


@dataclass(slots=True)
class Waits:
    retry_s: float
    rate_limit_s: float


def usage_from(reported: dict[str, Any] | None, prompt_estimate: int,
               completion_estimate: int) -> Usage:
    """The provider's numbers under any of their usual names, else our estimate."""
    def pick(*names: str) -> int | None:
        for name in names:
            value = (reported or {}).get(name)
            if type(value) is int and value >= 0:
                return value
        return None

    prompt = pick("prompt_tokens", "prompt_eval_count", "input_tokens")
    completion = pick("completion_tokens", "eval_count", "output_tokens")
    if prompt is None and completion is None:
        return Usage(prompt_estimate, completion_estimate,
                     prompt_estimate + completion_estimate, True)
    estimated = prompt is None or completion is None
    prompt = prompt_estimate if prompt is None else prompt
    completion = completion_estimate if completion is None else completion
    total = pick("total_tokens")
    return Usage(prompt, completion, prompt + completion if total is None else total, estimated)


class Round:
    def __init__(self, *, db: Database, http: aiohttp.ClientSession, tokenizer: Tokenizer,
                 registry: Any, settings: StreamSettings, waits: Waits, session_id: int,
                 user_id: int, model: dict[str, Any], user_message_id: int, user_content: str,
                 context: Context, new_message: dict[str, Any], regenerate: bool = False,
                 streamed: bool = True) -> None:
        self.db, self.http, self.tokenizer, self.registry = db, http, tokenizer, registry
        self.settings, self.waits = settings, waits
        self.session_id, self.user_id, self.model = session_id, user_id, model
        self.user_message_id, self.user_content = user_message_id, user_content
        self.context, self.new_message = context, new_message
        self.regenerate, self.streamed = regenerate, streamed
        self.sink: Sink | None = None
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.provider_usage: dict[str, Any] | None = None
        self.relayed = False
        self.ended_normally = False
        self.cancel_reason: str | None = None
        self.discard = False
        self.finishing = False
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.outcome: Outcome | None = None
        self.assistant_message_id: int | None = None
        self.saved_text = ""
        self.final_usage: dict[str, int] | None = None
        self.ended_at: float | None = None
        self.guard_used = False
        self._deadline = 0.0
        self._checkpointed = 0  # text and reasoning parts already in the last checkpoint
        self.finish_reason: str | None = None
        # The registry's key: the session, or (no session, /v1) a number no session has.
        self.key = session_id if session_id is not None else -id(self)

    # --- control ---

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"round-{self.session_id}")
        self.registry.add(self)

    def cancel(self, reason: str, *, discard: bool = False) -> None:
        """Stop the round; it still saves what it has (unless `discard`) and ends its stream."""
        self.discard = self.discard or discard
        if self.cancel_reason is not None or self.done.is_set():
            return
        self.cancel_reason = reason
        # Once saving has begun, let it complete: cancelling it would lose the reply.
        if not self.finishing and self.task is not None:
            self.task.cancel()

    async def wait_done(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.done.wait()
        except TimeoutError:
            return False
        return True

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    async def follow(self, wait_s: float) -> None:
        """Wait for the round (from its HTTP handler); if the client leaves meanwhile, stop it
        and let it finish (up to `wait_s`) before the handler's cancellation goes on.

        A streamed round keeps its partial reply; a non-streamed one has no partial to keep, so
        a client that gave up on it leaves nothing more stored (api.md §6.1).
        """
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            self.cancel("disconnect", discard=not self.streamed)
            await self.wait_done(wait_s)
            raise

    def checkpoint_row(self) -> tuple | None:
        """This round's text for the checkpoint table, if it grew since the last one."""
        parts = len(self.text_parts) + len(self.reasoning_parts)
        if self.finishing or self.discard or parts == self._checkpointed:
            return None
        self._checkpointed = parts
        return (self.session_id, self.user_message_id, int(self.regenerate),
                self.model["name"], self._provider_host(), self.context.prompt_tokens,
                self.context.limit, "".join(self.text_parts),
                "".join(self.reasoning_parts) or None)

    # --- the round ---

    async def run(self) -> None:
        try:
            outcome = await self._produce()
            await self._finish(outcome)
        except Exception:
            log.exception("round of session %s failed while finishing", self.session_id)
        finally:
            self.ended_at = time.monotonic()
            self.registry.remove(self)
            self.done.set()

    async def _produce(self) -> Outcome:
        try:
            opening: list[dict[str, Any]] = [{"type": "start", "messageId": self.user_message_id}]
            if self.settings.usage_emit and not self.settings.usage_provider_only:
                usage = self.context.usage()
                opening.append({"type": "usage", "usage": {
                    "prompt_tokens": usage["prompt_tokens"],
                    "total_tokens": usage["prompt_tokens"],
                    "context_limit": usage["context_limit"],
                    "context_remaining": usage["context_remaining"]}})
            await self._emit(*opening)
            self._deadline = asyncio.get_running_loop().time() + self.settings.timeout_s
            async with asyncio.timeout_at(self._deadline):
                return await self._generate()
        except asyncio.CancelledError:
            if self.cancel_reason is None:
                raise
            asyncio.current_task().uncancel()
            return Outcome("stopped")
        except TimeoutError:
            return Outcome("error", "AI API request timed out", "timeout")
        except ProviderError as e:
            return Outcome("error", str(e), e.kind, e.status)
        except DecryptError:
            return Outcome("error", "The model's API key cannot be decrypted; ask an admin to "
                           "re-enter it (was ENCRYPTION_KEY changed?)", "decrypt")
        except Exception:
            log.exception("round of session %s failed", self.session_id)
            return Outcome("error", "Internal error while generating the reply", "internal")

    def _target(self) -> Target:
        key = self.model["api_key"]
        if isinstance(key, Exception):  # the stored key did not decrypt
            raise key
        return Target(self.model["api_url"], key, self.model["name"])

    def _provider_host(self) -> str | None:
        return Target(self.model["api_url"], "", self.model["name"]).host

    def _body(self, stream: bool) -> bytes:
        messages = [*self.context.history, self.new_message]
        body = jsonfast.dumps({"model": self.model["name"], "messages": messages,
                               "stream": stream, "temperature": TEMPERATURE})
        # Kept for the retry and the fallback: an exact-size copy, since orjson's result keeps
        # its 4 KiB working buffer (measured with tracemalloc: 4 KiB per running round).
        return memoryview(body).tobytes()

    async def _generate(self) -> Outcome:
        target = self._target()
        if self.model.get("user_id") is not None:  # a user-entered URL: the policy applies
            policy = self.settings.policy.for_host(URL(target.url).host)
            netpolicy.current.set(netpolicy.Guard(policy) if policy else None)
        if not self.streamed:
            return await self._complete_once(target, retry=True)
        body = await self._encode(True)
        retried = False
        while True:
            try:
                await self._stream_once(target, body)
                self.ended_normally = True  # `end` goes out with the closing events
                return Outcome("complete")
            except ProviderError as e:
                if self.relayed or e.kind == "blocked":
                    raise
                if e.retryable and not retried:
                    retried = True
                    await asyncio.sleep(self._retry_wait(e))
                    continue
                return await self._fallback(target, e)

    def _has_images(self) -> bool:
        return len(self.new_message["content"]) > 1  # text part first, then images

    async def _encode(self, stream: bool) -> bytes:
        # Image bodies run to megabytes: serialise those off the loop.
        if self._has_images():
            return await asyncio.to_thread(self._body, stream)
        return self._body(stream)

    def _retry_wait(self, error: ProviderError) -> float:
        if error.status == 429:
            if error.retry_after is not None and error.retry_after <= self._time_left():
                return error.retry_after
            return self.waits.rate_limit_s
        return self.waits.retry_s

    def _time_left(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    async def _stream_once(self, target: Target, body: bytes) -> None:
        result = provider.StreamResult()
        finish_seen = False
        events = provider.stream(self.http, target, body, self.settings.max_idle_s, result)
        async with contextlib.aclosing(events):
            async for kind, value in events:
                if kind is CONTENT:
                    self.text_parts.append(value)
                    self.relayed = True
                    await self._emit_text("content", value)
                elif kind is REASONING:
                    self.reasoning_parts.append(value)
                    self.relayed = True
                    await self._emit_text("reasoning", value)
                elif kind is FINISH:
                    finish_seen = True
                    self.finish_reason = value
                    await self._emit({"type": "stop", "reason": value})
                elif kind is USAGE:
                    self.provider_usage = value
                    if self.settings.usage_emit:
                        await self._emit({"type": "usage", "usage": value})
        if not self.relayed and not result.done_marker and not finish_seen:
            reason = "no usable data" if result.junk_lines else "an empty stream"
            raise ProviderError(f"AI API returned {reason}", "garbage")

    async def _fallback(self, target: Target, first: ProviderError) -> Outcome:
        """Before any content: ask once more without streaming and relay that answer."""
        if self._time_left() <= 0:
            raise first
        try:
            outcome = await self._complete_once(target, retry=False)
        except ProviderError:
            raise first from None
        if not self.text_parts:
            raise first
        return outcome

    async def _complete_once(self, target: Target, *, retry: bool) -> Outcome:
        body = await self._encode(False)
        retried = not retry
        while True:
            try:
                completion = await provider.complete(self.http, target, body,
                                                     self.settings.max_idle_s)
                break
            except ProviderError as e:
                if not e.retryable or retried:
                    raise
                retried = True
                await asyncio.sleep(self._retry_wait(e))
        if completion.usage is not None:
            self.provider_usage = completion.usage
        self.finish_reason = completion.finish_reason
        if completion.reasoning:
            self.reasoning_parts.append(completion.reasoning)
            await self._emit_text("reasoning", completion.reasoning)
        if completion.content:
            self.text_parts.append(completion.content)
            self.relayed = True
            await self._emit_text("content", completion.content)
        return Outcome("complete")

    # --- events ---

    async def _emit(self, *payloads: dict[str, Any]) -> None:
        """Whole events in one write: a reader splitting on network chunks still sees them whole,
        and the opening and closing bursts cost one write each instead of one per event."""
        if self.sink is not None:
            await self.sink.send(*payloads)

    async def _emit_text(self, kind: str, text: str) -> None:
        if self.sink is None:
            return
        if len(text) <= PIECE_CHARS:
            await self.sink.text(kind, text)
            return
        for i in range(0, len(text), PIECE_CHARS):
            await self.sink.text(kind, text[i:i + PIECE_CHARS])

    # --- the end ---

    async def _finish(self, outcome: Outcome) -> None:
        self.finishing = True
        text = "".join(self.text_parts).strip()
        reasoning = "".join(self.reasoning_parts).strip() or None
        completion_estimate = await self.tokenizer.count_async(text) if text else 0
        usage = usage_from(self.provider_usage, self.context.prompt_tokens, completion_estimate)
        try:
            if self.discard:
                await self._forget()
            else:
                self.assistant_message_id = await self._persist(outcome, text, reasoning,
                                                                usage, completion_estimate)
        except Exception:
            log.exception("could not save the reply of session %s", self.session_id)
            outcome = Outcome("error", "Could not save the reply", "storage")
            self.assistant_message_id = None
        self.outcome = outcome
        self.saved_text = text if self.assistant_message_id is not None else ""
        limit = self.context.limit
        self.final_usage = {**usage.numbers(), "context_limit": limit,
                            "context_remaining": max(0, limit - usage.prompt_tokens)}
        closing: list[dict[str, Any]] = [{"type": "end"}] if self.ended_normally else []
        if self.settings.usage_emit and (not self.settings.usage_provider_only
                                         or self.provider_usage is None):
            closing.append({"type": "usage", "usage": self.final_usage})
        if outcome.status == "complete":
            closing.append({"type": "complete", "assistantMessageId": self.assistant_message_id})
        elif outcome.status == "stopped":
            closing.append({"type": "stop", "reason": "cancelled",
                            "assistantMessageId": self.assistant_message_id})
        else:
            closing.append({"type": "error", "error": outcome.error,
                            "assistantMessageId": self.assistant_message_id})
        await self._emit(*closing)

    async def _forget(self) -> None:
        """A discarded round leaves nothing behind, not even its checkpoint."""
        await self.db.run(checkpoints.clear, self.session_id)

    async def _persist(self, outcome: Outcome, text: str, reasoning: str | None, usage: Usage,
                       text_tokens: int) -> int | None:
        """The reply (if any text) and the usage row, in one transaction (one thread hop); the
        round's checkpoint goes in the same commit."""
        provider_host, mode = self._provider_host(), self.tokenizer.mode

        def write(conn: sqlite3.Connection) -> int | None:
            checkpoints.clear(conn, self.session_id)
            message_id = None
            if text:
                if self.regenerate:
                    messages_store.drop_replies_after(conn, self.session_id,
                                                      self.user_message_id)
                message_id = messages_store.add(
                    conn, self.session_id, "assistant", text, status=outcome.status,
                    reasoning=reasoning, tokens=(text_tokens, mode))
            usage_store.add(conn, self.session_id, message_id, self.model["name"],
                            provider_host, usage, self.context.limit)
            return message_id

        return await self.db.run(write)
