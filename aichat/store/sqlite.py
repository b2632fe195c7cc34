"""The SQLite backend: one aiosqlite connection shared by every request, and the migrations.

aiosqlite runs each call on the connection's own thread, in order. Reads go straight through;
writes go through `transaction()`, which holds an asyncio lock so that no request's statements
land inside another request's transaction.

`db.quick` is a second, read-only connection used right on the event loop for small indexed
reads on hot paths (the user behind a token, a session's owner, one settings row). Such a read
costs 5-40 µs, less than the thread hop it replaces (profiled: the hops, not the SQL, were
most of a request's cost). In WAL mode a reader never waits for the writer; if SQLite ever
says busy, the read falls back to the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar, cast

import aiosqlite

from aichat.store import base
from aichat.store.base import Params, inserted_id
from aichat.store.batch import GroupWriter, run_job
from aichat.store.migrations import SQL_DIR, MigrationsMissing, migration_files

log = logging.getLogger(__name__)


T = TypeVar("T")
__all__ = ["SQL_DIR", "MigrationsMissing", "migration_files"]  # re-exported for callers


async def on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` on aiosqlite's thread: one hop for many statements.

    aiosqlite has no public call for this, so it goes through `Connection._execute`, the
    method every public call uses (pinned by the version range in setup.cfg; a test checks it).
    """
    return await conn._execute(fn, conn._conn, *args)


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    # Runs on the database thread, so the event loop gets ready-made dicts.
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


# SQLite's messages for a database that takes no writes (full disk, read-only file or
# folder, a failing disk), as opposed to a statement's own fault.
_UNWRITABLE = ("database or disk is full", "attempt to write a readonly database",
               "disk I/O error", "unable to open database file")


class Reader(base.Reader):
    """Reads through aiosqlite's thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], list(await self.conn.execute_fetchall(sql, params)))


class QuickReader(base.Reader):
    """Reads on a private read-only connection, run inline. Only for bounded queries."""

    def __init__(self, conn: sqlite3.Connection | None, fallback: base.Reader) -> None:
        self._conn = conn
        self._fallback = fallback

    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        if self._conn is not None:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
        return await self._fallback.all(sql, params)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _open_quick(path: str) -> sqlite3.Connection | None:
    if path == ":memory:":
        return None  # a second connection would see another, empty database
    uri = Path(path).expanduser().resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           cached_statements=256)
    conn.row_factory = _dict_row
    conn.execute("PRAGMA busy_timeout = 0")  # never wait on the loop: fall back instead
    conn.execute("PRAGMA query_only = 1")
    return conn


class Transaction(Reader, base.Transaction):
    """Statements through aiosqlite's thread, a hop each; `call` runs a job in one hop."""

    async def call(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await on_thread(self.conn, run_job, job, *args)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return (await self.conn.execute(sql, params)).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        await self.conn.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        cursor = await self.conn.execute(sql, params)
        return inserted_id(cursor.lastrowid)


class Database(Reader, base.Database):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        super().__init__(conn)
        self.path = path
        self._write_lock = asyncio.Lock()
        self._group = GroupWriter(lambda fn, *args: on_thread(conn, fn, *args), self._write_lock)
        self.quick: QuickReader = QuickReader(None, self)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.conn)
            except BaseException:
                # Shielded: a cancelled request must still leave no half-written rows.
                await asyncio.shield(self.conn.execute("ROLLBACK"))
                raise
            await asyncio.shield(self.conn.execute("COMMIT"))

    async def _run(self, job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """For hot paths (a chat round's two writes): `transaction()` costs a hop per statement
        plus BEGIN and COMMIT; this shares one hop and one commit with concurrent writers.
        """
        return await self._group.run(job, *args)

    async def ping(self) -> None:
        """A round trip through the database thread (the health check)."""
        await self.value("SELECT 1")

    def unwritable(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.OperationalError) and str(error).startswith(_UNWRITABLE)

    def open_quick(self) -> None:
        self.quick = QuickReader(_open_quick(self.path), self)

    async def close(self) -> None:
        await self._group.close()
        self.quick.close()
        await self.conn.close()


async def connect(path: str) -> Database:
    """Open the database file (creating its folder), set the pragmas and migrate."""
    migration_files()  # no migrations: fail before creating a file
    if path != ":memory:":
        private_files(Path(path).expanduser())
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = _dict_row  # type: ignore[assignment]  # aiosqlite types it as `type`
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        db = Database(conn, path)
        await migrate(db)
        db.open_quick()
    except BaseException:
        await conn.close()
        raise
    return db


def private_files(path: Path) -> None:
    """Create the database file owner-only before SQLite opens it, and tighten old files.

    The file holds password hashes and every chat. SQLite gives the -wal and -shm files the
    mode of the database file, so a 0600 database keeps them private too; files left by an
    older version (created 0644 under the default umask) are narrowed here.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def split_statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        not ln.strip() or ln.strip().startswith("--") for ln in buf.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end: {buf.strip()[:60]!r}")
    return statements


async def migrate(db: Database, sql_dir: Path = SQL_DIR) -> list[int]:
    """Apply each numbered file not yet recorded in schema_version, each in its own transaction.

    Foreign keys are off meanwhile (SQLite ignores the pragma inside a transaction), so a
    migration may rebuild a table; `foreign_key_check` then proves nothing was orphaned.
    """
    await db.conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return await _apply_pending(db, sql_dir)
    finally:
        await db.conn.execute("PRAGMA foreign_keys = ON")


async def _apply_pending(db: Database, sql_dir: Path) -> list[int]:
    files = migration_files(sql_dir)  # before any write: a missing folder creates nothing
    await db.conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )
    done = {row["version"] for row in await db.all("SELECT version FROM schema_version")}
    applied = []
    for version, path in files:
        if version in done:
            continue
        statements = split_statements(path.read_text(encoding="utf-8"))
        async with db.transaction() as tx:
            for statement in statements:
                await tx.execute(statement)
            broken = await tx.all("PRAGMA foreign_key_check")
            if broken:
                raise RuntimeError(f"migration {path.name} broke foreign keys: {broken[:3]}")
            await tx.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)",
                             (version, path.name))
        log.info("applied migration %s", path.name)
        applied.append(version)
    return applied
