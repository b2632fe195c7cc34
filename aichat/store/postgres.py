"""The PostgreSQL backend (asyncpg, the `aichat[postgres]` extra): a connection pool shared
by every request, and the migrations of sql/postgres/.

Transactions take one cluster-wide advisory lock, so they are serialised across every
instance as SQLite's writer is within one (store/base.py); hot-path jobs (`run`) take none.
A lost connection surfaces as `Unavailable` (503), never as a 500 with a driver's text.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

from aichat.settings.config import redact
from aichat.store import base, dialect
from aichat.store.base import Params, Unavailable, inserted_id
from aichat.store.migrations import POSTGRES_DIR, migration_files

try:
    import asyncpg
except ImportError:  # the extra is not installed: connect() says how to get it
    asyncpg = None

log = logging.getLogger(__name__)
T = TypeVar("T")

# Advisory lock keys (two int4s). Class 0 is the store's; 1 and 2 are store/cluster.py's;
# 3 is `serialise`'s.
LOCKS = 0
MIGRATIONS, WRITES = 1, 2
SERIALISE = 3
BATCH_MAX = 256  # jobs per shared transaction: a bound on how long one commit waits


def _lost(e: BaseException) -> bool:
    return asyncpg is not None and isinstance(e, (
        OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
        asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError))


def _count(status: str) -> int:
    """The row count in a command tag ("UPDATE 3", "INSERT 0 1")."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class Reader(base.Reader):
    def __init__(self, conn: Any) -> None:
        self.conn = conn  # a pool or one connection: both have fetch/execute

    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        try:
            rows = await self.conn.fetch(dialect.postgres(sql), *params)
        except Exception as e:
            if _lost(e):
                raise Unavailable("the database is unreachable") from e
            raise
        return [dict(row) for row in rows]


class Transaction(Reader, base.Transaction):
    async def execute(self, sql: str, params: Params = ()) -> int:
        return _count(await self.conn.execute(dialect.postgres(sql), *params))

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        await self.conn.executemany(dialect.postgres(sql), rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        return inserted_id(await self.conn.fetchval(
            dialect.postgres(sql) + " RETURNING id", *params))

    async def serialise(self, key: int) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock($1, $2)", SERIALISE, key)


_STANDBY = "the server is a read-only standby"


class Database(Reader, base.Database):
    dialect = "postgresql"

    def __init__(self, pool: Any, url: str) -> None:
        super().__init__(pool)
        self.pool = pool
        self.url = url
        self.quick = self
        self._pending: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...],
                                  asyncio.Future[Any]]] = []
        self._drainer: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def _connection(self, serialised: bool) -> AsyncIterator[Transaction]:
        try:
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    if serialised:
                        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCKS, WRITES)
                    yield Transaction(conn)
                except BaseException:
                    # Shielded: a cancelled request must still leave no half-written rows.
                    if not conn.is_closed():
                        await asyncio.shield(tx.rollback())
                    raise
                await asyncio.shield(tx.commit())
        except Exception as e:
            if _lost(e):
                raise Unavailable("the database is unreachable") from e
            raise

    def _transaction(self) -> Any:
        return self._connection(serialised=True)

    async def _run(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Jobs that arrive together share one transaction (one commit, one WAL flush), as
        on SQLite (store/batch.py): 500 rounds starting at once cost a few commits, not 500.
        Once queued, a job commits even if the caller is cancelled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((job, args, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            jobs, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            try:
                async with self._connection(serialised=False) as tx:
                    results = [await job(tx, *args) for job, args, _ in jobs]
            except Exception:
                # One failed (or the commit): the batch is rolled back; each job runs again
                # alone, so only a failing job fails.
                for job, args, future in jobs:
                    try:
                        async with self._connection(serialised=False) as tx:
                            result = await job(tx, *args)
                    except Exception as e:
                        if not future.done():
                            future.set_exception(e)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, _, future), result in zip(jobs, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def ping(self) -> None:
        """A round trip, and a server that takes writes (not a standby in recovery)."""
        if await self.value("SELECT pg_is_in_recovery()"):
            self.write_error = _STANDBY
        elif self.write_error == _STANDBY:  # promoted since
            self.write_error = None

    def unwritable(self, error: Exception) -> bool:
        return isinstance(error, (asyncpg.ReadOnlySQLTransactionError, asyncpg.DiskFullError,
                                  asyncpg.InsufficientResourcesError))

    async def close(self) -> None:
        if self._drainer is not None:
            await asyncio.wait([self._drainer])
        await self.pool.close()


async def _reset(conn: Any) -> None:
    """What a connection returned to the pool needs: no open transaction. asyncpg's default
    reset (unlock all, close cursors, unlisten, reset settings: four statements) guards
    against session state this store never creates, and was half of PostgreSQL's statements
    per chat round (bench/CLUSTER.md)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def connect(url: str, pool_size: int, sql_dir: Path = POSTGRES_DIR) -> Database:
    """Open the pool and migrate (once, whichever instance gets there first)."""
    if asyncpg is None:
        raise RuntimeError("DATABASE_URL names PostgreSQL but asyncpg is not installed: "
                           "pip install 'aichat[postgres]'")
    files = migration_files(sql_dir)  # no migrations: fail before connecting
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, reset=_reset,
                                         server_settings={"application_name": "aichat"})
    except Exception as e:
        # asyncpg's messages never include the password; the URL is redacted all the same.
        raise OSError(f"cannot connect to PostgreSQL at {redact(url)}: {e}") from None
    try:
        async with pool.acquire() as conn:
            await migrate(conn, files)
    except BaseException:
        await pool.close()
        raise
    return Database(pool, url)


async def migrate(conn: Any, files: list[tuple[int, Path]]) -> list[int]:
    """Apply the files not yet in schema_version, under an advisory lock: instances starting
    together migrate once, the others wait and then find nothing left to do."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCKS, MIGRATIONS)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_version")}
        applied = []
        for version, path in files:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))  # a script: no parameters
                await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                                   version, path.name)
            log.info("applied migration postgres/%s", path.name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCKS, MIGRATIONS)
