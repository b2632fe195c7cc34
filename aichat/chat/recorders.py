"""How a round's outcome is stored (docs/api.md §5.7, §7).

A chat round stores its reply in the session with one usage row, replaces the replies it
regenerates and keeps a checkpoint while it runs (for crash recovery). A /v1 request stores
one usage row with the API key that made it: no session, no message, no checkpoint.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, TypeVar

from aichat.chat.call import UpstreamCall
from aichat.chat.outcome import Status
from aichat.chat.reply import Reply
from aichat.chat.quota import Hold
from aichat.store import checkpoints, messages, quotas, usage
from aichat.store.db import Database, Transaction
from aichat.store.usage import Usage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Turn:
    """The stored user message a chat round answers."""

    session_id: int
    message_id: int
    content: str
    regenerate: bool = False  # the reply replaces the ones after `message_id`
    reply_id: int | None = None  # a stream's reply row, `streaming` until the round ends


class Recorder(Protocol):
    hold: Hold  # the prompt held against the quotas: released with the usage row

    def checkpoint_row(self, reply: Reply, generation: str | None) -> checkpoints.Row | None:
        """The reply so far for the checkpoint table, if it grew since the last one;
        `generation` names the round's stream (chat/broadcast.py), if followable."""

    async def save(self, status: Status, text: str, reasoning: str | None, counted: Usage,
                   text_tokens: int) -> int | None:
        """Store the outcome in one transaction; the assistant message id, if one was stored."""

    async def discard(self) -> None:
        """Leave nothing behind: its session or user is being deleted, or the client of a
        non-streamed round left."""


async def _with_hold(db: Database, write: Callable[[Transaction], Awaitable[T]],
                     hold: Hold) -> T:
    """`write` and the hold's release in one commit: the round's tokens count once, as
    held or as used, never both or neither."""
    hold_id = hold.take()

    async def job(tx: Transaction) -> T:
        result = await write(tx)
        if hold_id is not None:
            await quotas.release(tx, hold_id)
        return result

    try:
        return await db.run(job)
    except BaseException:
        hold.put_back(hold_id)  # the round releases it as it ends
        raise


class ChatRecorder:
    def __init__(self, db: Database, call: UpstreamCall, turn: Turn, token_mode: str,
                 hold: Hold) -> None:
        self.db, self.call, self.turn, self.token_mode = db, call, turn, token_mode
        self.hold = hold
        self.provider = call.provider_host
        # How many text and reasoning parts the checkpoints already hold: each checkpoint
        # appends only the parts after these.
        self._texts_saved = self._thoughts_saved = 0

    def checkpoint_row(self, reply: Reply, generation: str | None) -> checkpoints.Row | None:
        texts, thoughts = len(reply.text_parts), len(reply.reasoning_parts)
        if texts == self._texts_saved and thoughts == self._thoughts_saved:
            return None
        first = self._texts_saved == self._thoughts_saved == 0
        new_text = "".join(reply.text_parts[self._texts_saved:])
        new_thoughts = "".join(reply.reasoning_parts[self._thoughts_saved:])
        self._texts_saved, self._thoughts_saved = texts, thoughts
        turn, call = self.turn, self.call
        return (turn.session_id, turn.message_id, int(turn.regenerate), call.model_name,
                self.provider, call.prompt_tokens, call.context_limit, new_text,
                new_thoughts or None, first, generation)

    async def save(self, status: Status, text: str, reasoning: str | None, counted: Usage,
                   text_tokens: int) -> int | None:
        """The reply (if any text) and the usage row in one commit (one thread hop), which
        also drops the round's checkpoint."""
        turn = self.turn
        cost = self.call.cost_nanos(counted.prompt_tokens, counted.completion_tokens)

        async def write(tx: Transaction) -> int | None:
            await checkpoints.clear(tx, turn.session_id)
            message_id, tokens = None, (text_tokens, self.token_mode)
            if not text:
                if turn.reply_id is not None:
                    await messages.remove(tx, turn.reply_id)
            elif turn.reply_id is None:
                if turn.regenerate:
                    await messages.drop_replies_after(tx, turn.session_id, turn.message_id)
                message_id = await messages.add(tx, turn.session_id, "assistant", text,
                                                status=status, reasoning=reasoning,
                                                tokens=tokens)
            elif await messages.finish(tx, turn.reply_id, text, status=status,
                                       reasoning=reasoning, tokens=tokens):
                message_id = turn.reply_id
                if turn.regenerate:
                    await messages.drop_replies_after(tx, turn.session_id, turn.message_id,
                                                      keep=message_id)
            await usage.add(tx, self.call.model_name, self.provider, counted, status=status,
                            session_id=turn.session_id, message_id=message_id,
                            context_limit=self.call.context_limit, cost_nanos=cost)
            return message_id

        return await _with_hold(self.db, write, self.hold)

    async def discard(self) -> None:
        reply_id = self.turn.reply_id

        async def job(tx: Transaction) -> None:
            await checkpoints.clear(tx, self.turn.session_id)
            if reply_id is not None:
                await messages.remove(tx, reply_id)

        await self.db.run(job)


class ApiRecorder:
    def __init__(self, db: Database, call: UpstreamCall, user_id: int,
                 api_key_id: int | None, hold: Hold) -> None:
        self.db, self.call, self.user_id, self.api_key_id = db, call, user_id, api_key_id
        self.provider = call.provider_host
        self.hold = hold

    def checkpoint_row(self, reply: Reply, generation: str | None) -> None:
        return None  # nothing to recover into: a /v1 reply is never stored

    async def save(self, status: Status, text: str, reasoning: str | None, counted: Usage,
                   text_tokens: int) -> None:
        await _with_hold(self.db, functools.partial(
            usage.add, model=self.call.model_name, provider=self.provider, usage=counted,
            status=status, user_id=self.user_id, api_key_id=self.api_key_id,
            cost_nanos=self.call.cost_nanos(counted.prompt_tokens, counted.completion_tokens)),
            self.hold)

    async def discard(self) -> None:
        pass  # nothing was written while it ran
