"""Following a round that runs on another instance (PostgreSQL), through its checkpoints.

The instance generating a round writes the text it streamed to the checkpoint tables once a
`checkpoint_interval_ms` (chat/checkpointer.py). A follower here reads what was added at the
same pace, then the reply row's final text and status: nothing is added to the generating
instance's relay path, and the text arrives up to an interval late, one event per kind per
read. Ids are `<generation>:c<part>`: a resume here by such an id goes on after that part;
any other id gets a snapshot, which begins with `start` (docs/api.md §5.9).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aichat.chat.reply import stored_numbers
from aichat.sse import SSEWriter
from aichat.sse.writer import encode_event
from aichat.store import checkpoints, usage
from aichat.store.base import Reader
from aichat.store.messages import STREAMING

KINDS = ("reasoning", "content")  # in the order a round streams them
FAILED = "Generating the reply failed"


def resume_point(last_event_id: str) -> tuple[str, int] | None:
    """(generation, part) of an id this module gave, else None."""
    generation, _, mark = last_event_id.partition(":")
    digits = mark[1:]
    if mark[:1] != "c" or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return generation, int(digits)


def _ending(status: str | None, reply_id: int | None) -> dict[str, Any]:
    """The terminal event of a round that ended `status` (None: it left no usage row, its
    session's messages being deleted)."""
    if status == "complete":
        return {"type": "complete", "assistantMessageId": reply_id}
    if status in ("stopped", None):
        return {"type": "stop", "reason": "cancelled", "assistantMessageId": reply_id}
    return {"type": "error", "error": FAILED, "assistantMessageId": reply_id}


def _rest(final: str | None, read: str) -> str:
    """What the stored final text adds to the text read from the checkpoints (the final
    text is stripped; the parts are not)."""
    final, read = final or "", read.lstrip()
    return final[len(read):] if final.startswith(read) else ""


class Tail:
    """One follower of a round running elsewhere: reads, then writes, until the round ends."""

    def __init__(self, db: Reader, writer: SSEWriter, session_id: int, reply_id: int, *,
                 interval_s: float, usage_emit: bool) -> None:
        self.db, self.writer, self.session_id, self.reply_id = db, writer, session_id, reply_id
        self.interval_s, self.usage_emit = interval_s, usage_emit
        self.part = 0  # the last checkpoint part read
        self.read = dict.fromkeys(KINDS, "")  # all the text read from the parts
        self.generation: str | None = None
        self.started = False  # the `start` event went out (or the client has it)

    async def run(self, resume: tuple[str, int] | None, usage_before: int) -> None:
        """Follow to the end: `resume` is where the client's copy ends, `usage_before` the
        session's newest usage row before the round ended."""
        shown = 0  # parts up to this one the client has
        while True:
            rows = await checkpoints.progress(self.db, self.reply_id, self.part)
            head = rows[0] if rows else None
            if head is not None and head["generation"] and self.generation is None:
                self.generation = head["generation"]
                if resume is not None and resume[0] == self.generation:
                    self.started, shown = True, resume[1]
            new = dict.fromkeys(KINDS, "")
            for row in rows:
                if row["part"] is not None and row["part"] > shown:
                    for kind in KINDS:
                        new[kind] += row[kind]
                if row["part"] is not None:
                    for kind in KINDS:
                        self.read[kind] += row[kind]
                    self.part = row["part"]
            ended = head is None or head["status"] != STREAMING
            if (self.generation is not None or ended) and not await self._send(head, new):
                return
            if ended:
                await self._end(head, usage_before)
                return
            await asyncio.sleep(self.interval_s)  # the pace the checkpoints are written at

    def _id(self) -> bytes:
        return b"id: %s:c%d\n" % (self.generation.encode(), self.part) if self.generation \
            else b""

    async def _send(self, head: dict[str, Any] | None, new: dict[str, str]) -> bool:
        chunks = []
        if not self.started:
            self.started = True
            start: dict[str, Any] = {"type": "start", "messageId":
                                     head["user_message_id"] if head is not None else None}
            if self.generation is not None:
                start["generationId"] = self.generation
            chunks.append(self._id() + encode_event(start))
        chunks += [self._id() + encode_event({"type": kind, "content": new[kind]})
                   for kind in KINDS if new[kind]]
        return await self.writer.write(b"".join(chunks)) if chunks else True

    async def _end(self, head: dict[str, Any] | None, usage_before: int) -> None:
        counted = await usage.round_after(self.db, self.session_id, usage_before)
        events: list[dict[str, Any]] = []
        if head is not None:
            events += [{"type": kind, "content": rest} for kind, rest in (
                ("reasoning", _rest(head["final_reasoning"], self.read["reasoning"])),
                ("content", _rest(head["final"], self.read["content"]))) if rest]
        if counted is not None and self.usage_emit:
            events.append({"type": "usage", "usage": stored_numbers(counted)})
        status = head["status"] if head is not None else (counted or {}).get("status")
        events.append(_ending(status, self.reply_id if head is not None else None))
        await self.writer.write(b"".join(self._id() + encode_event(e) for e in events))
