"""The SQLite handle: one aiosqlite connection shared by every request, and the migrations.

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
import importlib.resources
import logging
import os
import re
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence, TypeVar, cast

import aiosqlite

from aichat.store.batch import GroupWriter

log = logging.getLogger(__name__)


class MigrationsMissing(OSError):
    """The migration folder is missing, unreadable or empty: never start on a bare schema.

    An OSError, so the command line reports it like any other start-up failure (exit 1)."""


def _sql_dir() -> Path:
    """The migrations: `aichat/sql/` in an installed wheel (setup.py copies the top-level
    `sql/` there), else the checkout's top-level `sql/` (a checkout or an editable install)."""
    packaged = Path(str(importlib.resources.files("aichat").joinpath("sql")))
    checkout = Path(__file__).resolve().parent.parent.parent
    if packaged.is_dir() or not (checkout / "pyproject.toml").is_file():
        return packaged  # installed: a missing folder is reported under the package
    return checkout / "sql"


SQL_DIR = _sql_dir()
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

Params = Sequence[Any] | dict[str, Any]
T = TypeVar("T")


async def on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` on aiosqlite's thread: one hop for many statements.

    aiosqlite has no public call for this, so it goes through `Connection._execute`, the
    method every public call uses (pinned by the version range in setup.cfg; a test checks it).
    """
    return await conn._execute(fn, conn._conn, *args)


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    # Runs on the database thread, so the event loop gets ready-made dicts.
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


def inserted_id(rowid: int | None) -> int:
    """An INSERT's new row id: sqlite3 types it optional, but an insert always sets it."""
    if rowid is None:
        raise RuntimeError("INSERT reported no row id")
    return rowid


def found(row: T | None) -> T:
    """A row just written in the same transaction: it exists."""
    if row is None:
        raise RuntimeError("a row written in this transaction is missing")
    return row


class Reader:
    """Read helpers shared by the database and an open transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], list(await self.conn.execute_fetchall(sql, params)))

    async def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    async def value(self, sql: str, params: Params = ()) -> Any:
        row = await self.one(sql, params)
        return next(iter(row.values())) if row else None


class QuickReader(Reader):
    """`Reader` on a private read-only connection, run inline. Only for bounded queries."""

    def __init__(self, conn: sqlite3.Connection | None, fallback: Reader) -> None:
        super().__init__(fallback.conn)
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

    async def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    async def value(self, sql: str, params: Params = ()) -> Any:
        row = await self.one(sql, params)
        return next(iter(row.values())) if row else None

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


class Transaction(Reader):
    """The only way to write: statements here commit or roll back together."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous store function inside this transaction, in one hop."""
        return await on_thread(self.conn, fn, *args)

    async def execute(self, sql: str, params: Params = ()) -> aiosqlite.Cursor:
        return await self.conn.execute(sql, params)

    async def insert(self, sql: str, params: Params = ()) -> int:
        cursor = await self.conn.execute(sql, params)
        return inserted_id(cursor.lastrowid)


class Database(Reader):
    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        super().__init__(conn)
        self.path = path
        self._write_lock = asyncio.Lock()
        self._group = GroupWriter(lambda fn, *args: on_thread(conn, fn, *args), self._write_lock)
        self.quick = QuickReader(None, self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self.conn)
            except BaseException:
                # Shielded: a cancelled request must still leave no half-written rows.
                await asyncio.shield(self.conn.execute("ROLLBACK"))
                raise
            await asyncio.shield(self.conn.execute("COMMIT"))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` (synchronous SQL) committed atomically on the database thread.

        For hot paths (a chat round's two writes): `transaction()` costs a hop per statement
        plus BEGIN and COMMIT; this shares one hop and one commit with concurrent writers.
        """
        return await self._group.run(fn, *args)

    async def ping(self) -> None:
        """A round trip through the database thread (the health check)."""
        await self.value("SELECT 1")

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


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    """The numbered migrations, in order; `MigrationsMissing` when there are none to read."""
    try:
        names = sorted(entry.name for entry in sql_dir.iterdir())
    except OSError as e:
        raise MigrationsMissing(f"cannot read the migration folder {sql_dir}: "
                                f"{e.strerror or e}") from e
    found = []
    for name in names:
        match = _MIGRATION_NAME.match(name)
        if match:
            found.append((int(match.group(1)), sql_dir / name))
    if not found:
        raise MigrationsMissing(f"no migrations (NNN_name.sql) in {sql_dir}")
    return found


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
