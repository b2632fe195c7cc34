"""One round: a reply generated for a request, relayed as events and stored however it ends.

A round runs in its own task, so a stop request, a new round on the same session, a deleted
session or shutdown can cancel it, and the HTTP handler only waits for it. The round itself
only coordinates: its attempts (chat/attempts.py) fill the reply and relay it to the sink
(chat/sink.py); whatever ends it (success, error, stop, client gone), its recorder
(chat/recorders.py) stores the outcome, then the final usage and exactly one terminal event go
out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from aichat.chat.attempts import Attempts, Waits
from aichat.chat.broadcast import Broadcast
from aichat.chat.call import UpstreamCall
from aichat.chat.outcome import COMPLETE, STOPPED, CancelReason, ErrorKind, Outcome, Status
from aichat.chat.recorders import Recorder, Turn
from aichat.chat.reply import Reply, usage_from
from aichat.chat.sink import NOWHERE, Sink
from aichat.chat.tokenizer import Tokenizer
from aichat.security.crypto import DecryptError
from aichat.settings.system import StreamSettings
from aichat.store import checkpoints
from aichat.store.usage import Usage
from aichat.upstream.client import ProviderError

if TYPE_CHECKING:  # it holds rounds
    from aichat.chat.registry import Registry
    from aichat.metrics.catalog import Metrics

log = logging.getLogger(__name__)

DECRYPT_ERROR = ("The model's API key cannot be decrypted; ask an admin to re-enter it (was "
                 "ENCRYPTION_KEY changed?)")


@dataclass(frozen=True, slots=True)
class Engine:
    """What every round shares: the upstream pool, the token counter, the registry."""

    http: aiohttp.ClientSession
    tokenizer: Tokenizer
    registry: Registry
    waits: Waits
    metrics: Metrics | None = None  # off: METRICS_ENABLED=false


class Round:
    """The coordinator: its task, why it was cancelled, when it is done, how it ended."""

    def __init__(self, engine: Engine, call: UpstreamCall, recorder: Recorder, *,
                 settings: StreamSettings, user_id: int, turn: Turn | None = None,
                 streamed: bool = True) -> None:
        self.engine, self.call, self.recorder = engine, call, recorder
        self.settings, self.user_id, self.turn, self.streamed = settings, user_id, turn, streamed
        # The registry's key: the session, or (no session, /v1) a number no session has.
        self.key = turn.session_id if turn is not None else -id(self)
        self.sink: Sink = NOWHERE  # a streamed round's is set before it starts
        self.reply = Reply()
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.cancel_reason: CancelReason | None = None
        self.discard = False
        self.finishing = False
        self.guard_used = False
        self.ended_at: float | None = None
        # How it ended, for the handler once `done` is set.
        self.outcome: Outcome | None = None
        self.assistant_message_id: int | None = None
        self.final_usage: dict[str, int] | None = None
        self.claim_id: int | None = None  # its slot among several instances (chat/cluster.py)
        self.detached = False  # its client left and it runs on (`outlives_client`)
        self.broadcast: Broadcast | None = None  # an /api chat stream's: its followers

    @property
    def session_id(self) -> int | None:
        return self.turn.session_id if self.turn is not None else None

    @property
    def user_message_id(self) -> int | None:
        return self.turn.message_id if self.turn is not None else None

    @property
    def saved_text(self) -> str:
        return self.reply.text() if self.assistant_message_id is not None else ""

    # --- control ---

    def start(self) -> None:
        self.recorder.hold.owned = True  # released as the round ends, whatever happens
        self.task = asyncio.create_task(self._run(), name=f"round-{self.key}")
        self.engine.registry.add(self)

    def cancel(self, reason: CancelReason, *, discard: bool = False) -> None:
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

    @property
    def outlives_client(self) -> bool:
        """A chat stream's round runs on when its client leaves (`on_disconnect`,
        docs/api.md §6.1); a /v1 request or a non-streamed round ends with its client."""
        return self.streamed and self.turn is not None and self.settings.outlive_client

    def client_gone(self) -> None:
        if self.outlives_client:
            self.detached = True
        else:
            self.cancel(CancelReason.DISCONNECT, discard=not self.streamed)

    async def follow(self, wait_s: float) -> None:
        """Wait for the round (from its HTTP handler). If the client leaves meanwhile, a round
        that outlives its client runs on; any other is stopped and given up to `wait_s` to
        finish before the handler's cancellation goes on.

        A streamed round keeps its partial reply; a non-streamed one has no partial to keep, so
        a client that gave up on it leaves nothing more stored (docs/api.md §6.1).
        """
        if self.task is None:
            raise RuntimeError("follow() before start()")
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self.outlives_client and self.cancel_reason is None:
                self.detached = True  # its task is the registry's now, as any round's
                raise
            self.cancel(CancelReason.DISCONNECT, discard=not self.streamed)
            await self.wait_done(wait_s)
            raise

    def checkpoint_row(self) -> checkpoints.Row | None:
        """This round's text for the checkpoint table, if it grew since the last one."""
        if self.finishing or self.discard:
            return None
        return self.recorder.checkpoint_row(
            self.reply, self.broadcast.generation if self.broadcast is not None else None)

    # --- the round ---

    async def _run(self) -> None:
        try:
            outcome = await self._produce()
            await self._finish(outcome)
        except Exception:
            log.exception("round %s failed while finishing", self.key)
        finally:
            self.ended_at = time.monotonic()
            self.engine.registry.remove(self)
            try:
                try:
                    await self.recorder.hold.release()  # unless the usage row's commit did
                except Exception as e:  # the database is away: a restart or sweep frees it
                    log.warning("round %s could not release its quota hold: %s", self.key, e)
                await self.engine.registry.released(self)
            finally:
                self.done.set()

    async def _produce(self) -> Outcome:
        try:
            await self.sink.send(*self._opening())
            await Attempts(self.engine.http, self.call, self.settings, self.engine.waits,
                           self.reply, self.sink, self.engine.metrics).run(self.streamed)
            return COMPLETE
        except asyncio.CancelledError:
            if self.cancel_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return STOPPED
        except TimeoutError:
            return Outcome(Status.ERROR, "AI API request timed out", ErrorKind.TIMEOUT)
        except ProviderError as e:
            return Outcome(Status.ERROR, str(e), ErrorKind(e.kind), e.status)
        except DecryptError:
            return Outcome(Status.ERROR, DECRYPT_ERROR, ErrorKind.DECRYPT)
        except Exception:
            log.exception("round %s failed", self.key)
            return Outcome(Status.ERROR, "Internal error while generating the reply",
                           ErrorKind.INTERNAL)

    async def _finish(self, outcome: Outcome) -> None:
        self.finishing = True
        text, reasoning = self.reply.text(), self.reply.reasoning()
        text_tokens = await self.engine.tokenizer.count_async(text) if text else 0
        counted = usage_from(self.reply.usage, self.call.prompt_tokens, text_tokens)
        self.outcome = await self._store(outcome, text, reasoning, counted, text_tokens)
        self.final_usage = self._usage_numbers(counted.prompt_tokens, counted.numbers())
        kind = self._kind(self.outcome)
        if self.engine.metrics is not None:
            self.engine.metrics.round_ended(
                "chat" if self.turn is not None else "v1", self.outcome.status.value, kind,
                counted.prompt_tokens, counted.completion_tokens)
        log.debug("round %s ended %s%s%s: %d+%d tokens", self.key, self.outcome.status.value,
                  f" ({kind})" if kind else "", " detached" if self.detached else "",
                  counted.prompt_tokens, counted.completion_tokens)
        await self.sink.send(*self._closing(self.outcome))

    async def _store(self, outcome: Outcome, text: str, reasoning: str | None, counted: Usage,
                     text_tokens: int) -> Outcome:
        """The recorder's save (or discard); a failure to save becomes the outcome."""
        try:
            if self.discard:
                await self.recorder.discard()
            else:
                self.assistant_message_id = await self.recorder.save(
                    outcome.status, text, reasoning, counted, text_tokens)
        except Exception:
            log.exception("could not save the reply of round %s", self.key)
            self.assistant_message_id = None
            return Outcome(Status.ERROR, "Could not save the reply", ErrorKind.STORAGE)
        return outcome

    def _kind(self, outcome: Outcome) -> str:
        """What ended it, for the metrics: the error's kind, or why it was stopped."""
        if outcome.kind is not None:
            return outcome.kind.value
        reason = self.cancel_reason
        return reason.value if reason is not None and outcome.status == Status.STOPPED else ""

    # --- events (docs/api.md §5.6) ---

    def _usage_numbers(self, prompt_tokens: int, numbers: dict[str, int]) -> dict[str, int]:
        """`numbers` with the context gauge, for a round whose messages had a budget."""
        limit = self.call.context_limit
        if limit is None:
            return numbers
        return {**numbers, "context_limit": limit,
                "context_remaining": max(0, limit - prompt_tokens)}

    def _opening(self) -> list[dict[str, Any]]:
        start: dict[str, Any] = {"type": "start", "messageId": self.user_message_id}
        if self.broadcast is not None:
            start["generationId"] = self.broadcast.generation
        opening = [start]
        if self.settings.usage_emit and not self.settings.usage_provider_only:
            prompt = self.call.prompt_tokens
            opening.append({"type": "usage", "usage": self._usage_numbers(
                prompt, {"prompt_tokens": prompt, "total_tokens": prompt})})
        return opening

    def _closing(self, outcome: Outcome) -> list[dict[str, Any]]:
        closing: list[dict[str, Any]] = [{"type": "end"}] if self.reply.stream_ended else []
        if self.settings.usage_emit and (not self.settings.usage_provider_only
                                         or self.reply.usage is None):
            closing.append({"type": "usage", "usage": self.final_usage})
        message_id = self.assistant_message_id
        if outcome.status == Status.COMPLETE:
            closing.append({"type": "complete", "assistantMessageId": message_id})
        elif outcome.status == Status.STOPPED:
            closing.append({"type": "stop", "reason": "cancelled",
                            "assistantMessageId": message_id})
        else:
            closing.append({"type": "error", "error": outcome.error,
                            "assistantMessageId": message_id})
        return closing
