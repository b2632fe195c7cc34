"""Group commit: concurrent small write jobs share one transaction and one thread hop.

When 500 chat rounds start at once, each has a user message to store. One transaction each
meant 500 hops queued behind one lock, and each hop waits for the GIL while the loop is busy:
the last stream got its headers after ~1 s. Here the jobs that arrive while a batch is being
written wait for the next batch, so a burst costs a handful of hops. Each job runs in its own
SAVEPOINT: one failing job rolls back only its own statements.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar, cast

from aichat.store import base
from aichat.store.base import Params, inserted_id

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future]



def drive(job: Coroutine[Any, Any, T]) -> T:
    """Run a store job to its end without an event loop (on the database thread).

    Its `tx` is a `ThreadTransaction`, whose methods never suspend, so the coroutine finishes
    in one step; a job that awaits anything else is a bug, reported here.
    """
    try:
        job.send(None)
    except StopIteration as done:
        return done.value
    job.close()
    raise RuntimeError("a store job awaited something other than its transaction")


class ThreadTransaction(base.Transaction):
    """A transaction on the plain sqlite3 connection, for jobs run on the database thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return self.conn.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        return inserted_id(self.conn.execute(sql, params).lastrowid)


def run_job(conn: sqlite3.Connection, job: Callable[..., Awaitable[T]], *args: Any) -> T:
    """On the database thread: `job(tx, *args)` on this connection."""
    return drive(cast(Coroutine[Any, Any, T], job(ThreadTransaction(conn), *args)))


def _write_batch(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[bool, Any]]:
    """Runs on the database thread: all jobs, one transaction."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn, args, _ in jobs:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((True, run_job(conn, fn, *args)))
                conn.execute("RELEASE job")
            except Exception as e:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, e))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


class GroupWriter:
    def __init__(self, run_on_thread: Callable[..., Any], lock: asyncio.Lock) -> None:
        self._run_on_thread = run_on_thread  # (fn, *args) -> awaitable, on the DB thread
        self._lock = lock  # shared with Database.transaction(): no interleaving
        self._pending: list[Job] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`await fn(tx, *args)` committed with whatever else is waiting; its result or error.

        Once queued, the job is written even if the caller is cancelled meanwhile.
        """
        future = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="db-group-writer")
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            jobs, self._pending = self._pending, []
            try:
                async with self._lock:
                    outcomes = await self._run_on_thread(_write_batch, jobs)
            except BaseException as e:  # the whole batch failed (e.g. COMMIT: disk full)
                for _, _, future in jobs:
                    if not future.done():
                        future.set_exception(e if isinstance(e, Exception)
                                             else RuntimeError("write interrupted"))
                if not isinstance(e, Exception):
                    raise
                continue
            for (_, _, future), (ok, value) in zip(jobs, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def close(self) -> None:
        if self._drainer is not None:
            await asyncio.wait([self._drainer])
