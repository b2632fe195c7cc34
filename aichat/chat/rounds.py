"""The registry of running rounds: at most one per session, findable for stop and delete."""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)

PERSIST_WAIT_S = 5.0


class Cancellable(Protocol):
    session_id: int
    user_id: int

    def cancel(self, reason: str, *, discard: bool = False) -> None: ...

    async def wait_done(self, timeout: float) -> bool: ...


class Registry:
    def __init__(self) -> None:
        self._running: dict[int, Cancellable] = {}

    def running(self, session_id: int) -> Cancellable | None:
        return self._running.get(session_id)

    def add(self, round_: Cancellable) -> None:
        self._running[round_.session_id] = round_

    def remove(self, round_: Cancellable) -> None:
        if self._running.get(round_.session_id) is round_:
            del self._running[round_.session_id]

    def count_for_user(self, user_id: int) -> int:
        return sum(1 for r in self._running.values() if r.user_id == user_id)

    async def cancel_session(self, session_id: int, reason: str, *, discard: bool = False,
                             timeout: float = PERSIST_WAIT_S) -> Cancellable | None:
        """Cancel the session's running round and wait (bounded) until it has persisted."""
        round_ = self._running.get(session_id)
        if round_ is None:
            return None
        round_.cancel(reason, discard=discard)
        if not await round_.wait_done(timeout):
            log.warning("round of session %s did not finish within %.1fs", session_id, timeout)
        return round_

    async def _cancel_many(self, rounds: list[Cancellable], reason: str, discard: bool) -> None:
        for round_ in rounds:
            round_.cancel(reason, discard=discard)
        deadline = time.monotonic() + PERSIST_WAIT_S
        for round_ in rounds:
            await round_.wait_done(max(0.0, deadline - time.monotonic()))

    async def cancel_user(self, user_id: int) -> None:
        """Stop a deleted user's rounds without saving anything."""
        await self._cancel_many([r for r in self._running.values() if r.user_id == user_id],
                                "deleted", discard=True)

    async def cancel_all(self) -> None:
        await self._cancel_many(list(self._running.values()), "shutdown", discard=False)
