"""Several aichat instances on one PostgreSQL database: what one process kept in memory about
its running rounds, shared (docs/operations.md, "Several instances").

Each instance keeps one coordination connection besides its pool. On it the instance holds
the advisory lock that says it is alive (store/cluster.py) and LISTENs on one channel:

- `stop`: cancel the round of a session if it runs here (a stop, a new message, a deletion
  that reached another instance);
- `user`: cancel a deleted user's rounds that run here;
- `ended`: a session's round ended somewhere, with the reply it saved (who asked to stop it
  waits for this).

Slots of the per-user concurrency limit are rows of `live_rounds`, claimed under a per-user
lock and counted across instances; a dead instance's rows no longer count. A janitor turns
the checkpoints of dead instances into `interrupted` replies. If the coordination connection
drops (PostgreSQL restarting), this instance's rounds end at once with an error: the others
may already treat it as dead. It then reconnects under a new number.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from aichat.chat.outcome import CancelReason
from aichat.chat.registry import GUARD_WINDOW_S
from aichat.security import ratelimit
from aichat.store import checkpoints, messages
from aichat.store import cluster as shared
from aichat.store.base import Unavailable
from aichat.store.postgres import Database, asyncpg

if TYPE_CHECKING:
    from aichat.chat.registry import Registry
    from aichat.chat.round import Round

log = logging.getLogger(__name__)

CHANNEL = shared.CHANNEL
SWEEP_EVERY_S = 2.0
RECONNECT_WAIT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
POLL_S = 0.05


class Cluster:
    def __init__(self, db: Database, count_tokens: Callable[[str], int]) -> None:
        self.db = db
        self.instance = 0  # this process's number while its coordination connection lives
        self._count_tokens = count_tokens
        self._registry: Registry | None = None
        self._conn: Any = None
        self._waiters: dict[int, list[asyncio.Future[int | None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- life ---

    @property
    def joined(self) -> bool:
        """Whether this instance holds its number (false while it rejoins after a loss)."""
        return self._conn is not None

    async def start(self, registry: Registry) -> None:
        self._registry = registry
        await self._connect()
        await self.sweep()  # rounds a dead instance (or this one, before a crash) left
        self._spawn(self._janitor(), "cluster-janitor")

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.db.url, server_settings={
            "application_name": "aichat-coordination"})
        try:
            self.instance = await conn.fetchval("SELECT nextval('aichat_instances')::int")
            await conn.execute("SELECT pg_advisory_lock($1, $2)", shared.INSTANCE,
                               self.instance)
            await conn.add_listener(CHANNEL, self._heard)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._lost)
        self._conn = conn
        log.info("joined the cluster as instance %d", self.instance)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._conn is not None:
            await self._conn.close()  # frees the instance lock: this one is gone

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lost(self, conn: Any) -> None:
        if self._closing or conn is not self._conn:
            return
        log.error("lost the coordination connection to PostgreSQL (instance %d): ending the "
                  "rounds running here, reconnecting", self.instance)
        self._conn = None
        self._spawn(self._rejoin(), "cluster-rejoin")

    async def _rejoin(self) -> None:
        if self._registry is not None:
            await self._registry.cancel_all(CancelReason.SHUTDOWN)
        for attempt in itertools.count():
            await asyncio.sleep(RECONNECT_WAIT_S[min(attempt, len(RECONNECT_WAIT_S) - 1)])
            try:
                await self._connect()
                return
            except Exception as e:  # refused, reset, starting up: try again
                log.warning("PostgreSQL still unreachable: %s", type(e).__name__)

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await self.sweep()
            except Exception as e:  # PostgreSQL restarting: try again next time
                log.warning("cluster sweep failed: %s", e)

    async def sweep(self) -> None:
        """Forget dead instances' slots; recover their checkpoints as interrupted replies."""
        if self._conn is None:
            return
        await self.db.run(shared.sweep, self.instance, 2 * ratelimit.WINDOW_S)
        for other in await self.db.run(checkpoints.instances):
            if other == self.instance:
                continue
            recovered = await self.db.run(self._recover, other)
            if recovered:
                log.warning("recovered %d round(s) of instance %d, which is gone; their "
                            "partial replies are kept as 'interrupted'", len(recovered), other)
        # Replies of rounds that ended without saving (a dead instance's before its first
        # checkpoint, a failed save): nothing runs them, nothing holds their text.
        await self.db.run(messages.drop_streaming, True)

    async def _recover(self, tx: Any, other: int) -> list[dict[str, Any]]:
        if not await shared.is_dead(tx, other):
            return []
        return await checkpoints.recover(tx, self._count_tokens, instance=other)

    # --- messages ---

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        message = json.loads(payload)
        registry = self._registry
        if registry is None:
            return
        if message["op"] == "stop":
            round_ = registry.running(message["s"])
            if round_ is not None:
                round_.cancel(CancelReason(message["r"]), discard=message["d"])
        elif message["op"] == "user":
            for round_ in registry.rounds():
                if round_.user_id == message["u"]:
                    round_.cancel(CancelReason.DELETED, discard=True)
        elif message["op"] == "ended":
            for future in self._waiters.get(message["s"], ()):
                if not future.done():
                    future.set_result(message["m"])

    async def _notify(self, message: dict[str, Any]) -> None:
        await self.db.value("SELECT pg_notify(?, ?)", (CHANNEL, json.dumps(message)))

    # --- slots ---

    async def claim(self, user_id: int, session_id: int | None,
                    limit: int) -> tuple[int | None, bool]:
        """(A slot for the user's new round or None, whether the session's round runs on
        another instance). Unavailable (503) while this instance rejoins: under its old
        number the others already count it dead."""
        if not self.joined:
            raise Unavailable("this instance is reconnecting to the database")
        return await shared.claim(self.db, self.instance, user_id, session_id, limit)

    async def rounds_of(self, user_id: int) -> int:
        return await shared.rounds_of(self.db, user_id)

    async def release_claim(self, claim_id: int) -> None:
        await self.db.run(shared.release, claim_id)

    async def released(self, round_: Round) -> None:
        """A round here ended (its reply saved): free its slot, tell who waits for it."""
        session_id, turn = round_.session_id, round_.turn
        guard, message = None, None
        if session_id is not None and turn is not None:
            if round_.streamed:
                guard = (turn.message_id, round_.assistant_message_id, round_.cancel_reason)
            message = json.dumps({"op": "ended", "s": session_id,
                                  "m": round_.assistant_message_id})
        if round_.claim_id is not None or message is not None:
            await shared.end(self.db, round_.claim_id, session_id, guard, message)

    # --- across instances ---

    async def stop_elsewhere(self, session_id: int, reason: CancelReason, *,
                             discard: bool = False, timeout: float) -> tuple[bool, int | None]:
        """Stop the session's round if another instance runs it and wait (bounded) until it
        has saved: (whether one ran, the reply it saved)."""
        future = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(session_id, [])
        waiting.append(future)
        try:
            if not await self.db.run(shared.running_elsewhere, self.instance, "session_id",
                                     session_id):
                return False, None
            await self._notify({"op": "stop", "s": session_id, "r": reason, "d": discard})
            try:
                return True, await asyncio.wait_for(future, timeout)
            except TimeoutError:
                log.warning("the round of session %s on another instance did not end within "
                            "%.1fs", session_id, timeout)
                return True, None
        finally:
            waiting.remove(future)
            if not waiting:
                del self._waiters[session_id]

    async def stop_user_elsewhere(self, user_id: int, timeout: float) -> None:
        """Cancel a deleted user's rounds on the other instances, saving nothing; wait for
        them to end (bounded)."""
        if not await self.db.run(shared.running_elsewhere, self.instance, "user_id", user_id):
            return
        await self._notify({"op": "user", "u": user_id})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            if not await self.db.run(shared.running_elsewhere, self.instance, "user_id",
                                     user_id):
                return

    async def take_guard(self, session_id: int, content: str,
                         reasons: tuple[str, ...]) -> dict[str, Any] | None:
        return await self.db.run(shared.take_guard, session_id, content, reasons,
                                 GUARD_WINDOW_S)
