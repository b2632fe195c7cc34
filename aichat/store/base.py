"""What the store modules write their SQL against, whichever database is behind it.

Queries are written once, in the SQL both SQLite and PostgreSQL accept, with `?` placeholders
(the PostgreSQL backend numbers them: store/dialect.py). Three shapes of access:

- `Reader`: reads (the database itself, or an open transaction);
- `Database.transaction()`: an `async with` block whose statements commit or roll back
  together. Transactions are serialised, as SQLite's single writer always did, across every
  instance on PostgreSQL too: the checks a handler makes before writing (the last admin, a
  name taken, a per-user cap) hold when it writes;
- `Database.run(job, *args)`: a hot-path write job, `async def job(tx, *args)`, committed
  atomically. SQLite runs it on its thread in one hop, batched with concurrent jobs
  (store/batch.py), so a job may await nothing but its `tx`; PostgreSQL runs it on a pooled
  connection, concurrently with other jobs (no cross-instance serialisation).
"""

from __future__ import annotations

import abc
import contextlib
import time
from typing import (Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Iterator,
                    Sequence, TypeVar)

Params = Sequence[Any]
T = TypeVar("T")


def inserted_id(rowid: int | None) -> int:
    """An INSERT's new row id: drivers type it optional, but an insert always sets it."""
    if rowid is None:
        raise RuntimeError("INSERT reported no row id")
    return rowid


def found(row: T | None) -> T:
    """A row just written in the same transaction: it exists."""
    if row is None:
        raise RuntimeError("a row written in this transaction is missing")
    return row


class Reader(abc.ABC):
    @abc.abstractmethod
    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Every row, as dicts keyed by column name (camelCase aliases are double-quoted)."""

    async def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    async def value(self, sql: str, params: Params = ()) -> Any:
        row = await self.one(sql, params)
        return next(iter(row.values())) if row else None


class Transaction(Reader):
    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """One statement for each parameter row."""

    @abc.abstractmethod
    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT into a table with an `id` column; the new row's id."""

    async def call(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a store job inside this transaction (SQLite: on its thread, in one hop)."""
        return await job(self, *args)

    async def serialise(self, key: int) -> None:
        """Until this transaction ends, hold off every other that serialises on `key`, on
        every instance (a `run` job's check-then-write). SQLite's one writer already does."""


Job = Callable[..., Awaitable[Any]]


class Database(Reader):
    dialect: str  # "sqlite" or "postgresql"
    # Small indexed reads on hot paths (the user behind a token): SQLite answers them on the
    # loop from a read-only connection; PostgreSQL from its pool, like any read.
    quick: Reader

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Statements that commit together; serialised with every other transaction."""
        with self._watched():
            async with self._transaction() as tx:
                yield tx

    @abc.abstractmethod
    def _transaction(self) -> AsyncContextManager[Transaction]:
        """`transaction` without the bookkeeping."""

    # Each write job's latency, for the metrics (aichat/metrics/catalog.py); None: not timed.
    on_write: Callable[[float], None] | None = None
    # Why the latest write job failed for want of a writable database (full disk, read-only
    # file or standby), until one succeeds: the health check reports it (503).
    write_error: str | None = None

    async def run(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await job(tx, *args)` committed atomically, even if the caller is cancelled."""
        with self._watched():
            return await self._run(job, *args)

    @abc.abstractmethod
    async def _run(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`run` without the bookkeeping."""

    @contextlib.contextmanager
    def _watched(self) -> Iterator[None]:
        """A write: timed for the metrics, and whether the database took it, for the health
        check (a success clears `write_error`; a failure for want of a writable database sets
        it)."""
        start = time.perf_counter()
        try:
            yield
        except Exception as error:
            if self.unwritable(error):
                self.write_error = str(error) or type(error).__name__
            raise
        finally:
            if self.on_write is not None:
                self.on_write(time.perf_counter() - start)
        self.write_error = None

    def unwritable(self, error: Exception) -> bool:
        """Whether `error` says the database cannot take writes at all."""
        return False

    @abc.abstractmethod
    async def ping(self) -> None:
        """A round trip to the database (the health check)."""

    @abc.abstractmethod
    async def close(self) -> None:
        ...


class Unavailable(ConnectionError):
    """The database cannot be reached (PostgreSQL restarting): 503, try again shortly."""
