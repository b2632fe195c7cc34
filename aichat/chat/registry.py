"""The registry of rounds: at most one running per session, findable for stop and delete.

It also remembers each session's latest streamed round for a few seconds after it ends, for
the post-abort guard (docs/api.md §6.1): the existing front end's stop button aborts the stream
and at once re-sends the same message to /api/chat/completion.

And it holds the per-user concurrency limit (docs/api.md §8): `booked` counts a round while it
is set up, `add` from the moment it runs, so each round takes one slot, /api and /v1 alike.

With several instances on PostgreSQL, `cluster` (chat/cluster.py) extends each of these to
the rounds the other instances run: slots are counted across them, and a stop, a new message
or a deletion reaches a round wherever it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from aichat.chat.outcome import CancelReason
from aichat.http.errors import ApiError

if TYPE_CHECKING:  # the round registers itself here
    from aichat.chat.cluster import Cluster
    from aichat.chat.round import Round

log = logging.getLogger(__name__)

PERSIST_WAIT_S = 5.0
GUARD_WINDOW_S = 10.0
GUARD_REASONS = (CancelReason.DISCONNECT, CancelReason.STOP)
RETRY_AFTER_S = "15"


def decrement(counts: dict[int, int], key: int) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Registry:
    def __init__(self) -> None:
        self._running: dict[int, Round] = {}
        self._last_streamed: dict[int, Round] = {}
        self._locks: dict[int, tuple[asyncio.Lock, list[int]]] = {}
        self._claims: dict[int, int] = {}  # rounds of a user being set up, not yet running
        self._per_user: dict[int, int] = {}  # running rounds per user, so a claim is O(1)
        self._pruned_at = 0.0
        # Followers here of rounds running on other instances, per session (handlers/follow.py).
        self.tails: dict[int, int] = {}
        self.cluster: Cluster | None = None
        # Cluster slots claimed by `booked`, each handed to the round it sets up by `add`:
        # (user, session, slot, whether the session's round runs on another instance).
        self._handoff: list[tuple[int, int | None, int, bool]] = []

    def running(self, session_id: int) -> Round | None:
        return self._running.get(session_id)

    def rounds(self) -> list[Round]:
        return list(self._running.values())

    def add(self, round_: Round) -> None:
        for i, (user_id, session_id, claim_id, _) in enumerate(self._handoff):
            if user_id == round_.user_id and session_id == round_.session_id:
                round_.claim_id = claim_id
                del self._handoff[i]
                break
        replaced = self._running.get(round_.key)  # one that outlived its 5 s to stop
        if replaced is not None:
            self._uncount(replaced.user_id)
        self._running[round_.key] = round_
        self._per_user[round_.user_id] = self._per_user.get(round_.user_id, 0) + 1
        if round_.streamed and round_.session_id is not None:
            self._last_streamed[round_.session_id] = round_
            # A sweep per second at most: a burst of starts must not cost O(n²).
            now = time.monotonic()
            if len(self._last_streamed) > 256 and now - self._pruned_at > 1.0:
                self._pruned_at = now
                self._forget_old()

    def remove(self, round_: Round) -> None:
        if self._running.get(round_.key) is round_:
            del self._running[round_.key]
            self._uncount(round_.user_id)

    async def streams_of(self, user_id: int) -> int:
        """The user's rounds running now, on every instance."""
        if self.cluster is not None:
            return await self.cluster.rounds_of(user_id)
        return self._per_user.get(user_id, 0)

    def _uncount(self, user_id: int) -> None:
        decrement(self._per_user, user_id)

    @asynccontextmanager
    async def booked(self, user_id: int, limit: int, refusal: str,
                     session_id: int | None = None) -> AsyncIterator[None]:
        """Hold one of the user's `limit` slots while a round is set up: 429 `refusal` when all
        are taken. Start the round inside: from then on the running round is what counts.

        A round running on `session_id` does not count: the new one replaces it.
        """
        if not self._claim(user_id, session_id, limit):
            raise ApiError(429, refusal, {"Retry-After": RETRY_AFTER_S})
        try:
            entry = None
            if self.cluster is not None:
                claim_id, elsewhere = await self.cluster.claim(user_id, session_id, limit)
                if claim_id is None:
                    raise ApiError(429, refusal, {"Retry-After": RETRY_AFTER_S})
                entry = (user_id, session_id, claim_id, elsewhere)
                self._handoff.append(entry)
            try:
                yield
            finally:
                if entry is not None and entry in self._handoff:  # no round took it
                    self._handoff.remove(entry)
                    await asyncio.shield(self.cluster.release_claim(entry[2]))  # type: ignore[union-attr]
        finally:
            decrement(self._claims, user_id)

    def _claim(self, user_id: int, session_id: int | None, limit: int) -> bool:
        others = self._per_user.get(user_id, 0)
        same = self._running.get(session_id) if session_id is not None else None
        if same is not None and same.user_id == user_id:
            others -= 1
        if others + self._claims.get(user_id, 0) >= limit:
            return False
        self._claims[user_id] = self._claims.get(user_id, 0) + 1
        return True

    def _forget_old(self) -> None:
        now = time.monotonic()
        for session_id, round_ in list(self._last_streamed.items()):
            if round_.ended_at is not None and now - round_.ended_at > GUARD_WINDOW_S:
                del self._last_streamed[session_id]

    @asynccontextmanager
    async def reserve(self, session_id: int) -> AsyncIterator[None]:
        """Serialise round starts on a session and cancel the one running (it ends `stopped`)."""
        lock, holders = self._locks.setdefault(session_id, (asyncio.Lock(), [0]))
        holders[0] += 1
        try:
            async with lock:
                # The slot just claimed for this round said whether another instance runs
                # one on the session: if not, there is nothing to stop there.
                claimed = next((e for e in self._handoff if e[1] == session_id), None)
                await self.cancel_session(session_id, CancelReason.SUPERSEDED,
                                          elsewhere=claimed is None or claimed[3])
                yield
        finally:
            holders[0] -= 1
            if holders[0] == 0:
                del self._locks[session_id]

    async def cancel_session(self, session_id: int, reason: CancelReason, *, discard: bool = False,
                             timeout: float = PERSIST_WAIT_S,
                             elsewhere: bool = True) -> Round | None:
        """Cancel the session's running round and wait (bounded) until it has persisted: the
        round, or None if none ran here (on another instance, it is stopped all the same)."""
        round_ = self._running.get(session_id)
        if round_ is None:
            if self.cluster is not None and elsewhere:
                await self.cluster.stop_elsewhere(session_id, reason, discard=discard,
                                                  timeout=timeout)
            return None
        round_.cancel(reason, discard=discard)
        if not await round_.wait_done(timeout):
            log.warning("round of session %s did not finish within %.1fs", session_id, timeout)
        return round_

    async def released(self, round_: Round) -> None:
        """After a round ended and left `_running`: the cluster frees its slot."""
        if self.cluster is not None:
            try:
                await self.cluster.released(round_)
            except Exception as e:  # PostgreSQL away: the slot goes with the instance's rows
                log.warning("could not release the slot of round %s: %s", round_.key, e)

    def guard_candidate(self, session_id: int, content: str) -> Round | None:
        """The streamed round a /completion re-send duplicates, if any (once per round)."""
        round_ = self._last_streamed.get(session_id)
        if (round_ is None or round_.guard_used or round_.turn is None
                or round_.turn.content != content):
            return None
        if round_.running:
            return round_
        recent = (round_.ended_at is not None
                  and time.monotonic() - round_.ended_at <= GUARD_WINDOW_S)
        return round_ if recent and round_.cancel_reason in GUARD_REASONS else None

    async def _cancel_many(self, rounds: list[Round], reason: CancelReason,
                           discard: bool) -> None:
        for round_ in rounds:
            round_.cancel(reason, discard=discard)
        deadline = time.monotonic() + PERSIST_WAIT_S
        for round_ in rounds:
            await round_.wait_done(max(0.0, deadline - time.monotonic()))

    async def cancel_user(self, user_id: int) -> None:
        """Stop a deleted user's rounds without saving anything, wherever they run."""
        await self._cancel_many([r for r in self._running.values() if r.user_id == user_id],
                                CancelReason.DELETED, discard=True)
        if self.cluster is not None:
            await self.cluster.stop_user_elsewhere(user_id, PERSIST_WAIT_S)

    async def cancel_all(self, reason: CancelReason = CancelReason.SHUTDOWN) -> None:
        """End every round of this instance (shutting down, or cut off from the cluster)."""
        await self._cancel_many(list(self._running.values()), reason, discard=False)
