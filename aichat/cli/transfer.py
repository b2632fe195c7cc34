"""`migrate-to URL`: copy the configured SQLite database, every row, into an empty PostgreSQL one.

Ids are kept: the model API keys' ciphertext is bound to its row id, and tokens name user ids.
The source is only read (one snapshot); the copy is one PostgreSQL transaction, so a failure
leaves the target without a single copied row. The rows of the coordination tables
(sql/postgres/002_cluster.sql) are running processes' state: there is nothing to copy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from aichat.app import ENCRYPTION_KEY_FILE, JWT_SECRET_FILE
from aichat.cli.maintenance import MaintenanceError, database_file
from aichat.cli.pgtools import connect, hide, label, refuse_running, require_asyncpg
from aichat.settings.config import POSTGRES_SCHEMES, Config
from aichat.store import postgres
from aichat.store.migrations import SQL_DIR, migration_files

# Parents before children (foreign keys), each with the column it is read in order of.
TABLES = {"users": "id", "model_configs": "id", "chat_sessions": "id", "system_settings": "key",
          "user_settings": "user_id", "messages": "id", "api_keys": "id", "usage_metrics": "id",
          "quota_days": "user_id, day, api_key_id", "quota_minutes": "user_id",
          "round_checkpoints": "session_id", "round_checkpoint_parts": "id", "audit_log": "id"}
CLUSTER_TABLES = ("live_rounds", "round_ends", "login_failures", "quota_holds")
# quota_days is copied as it is (it counts rows of deleted sessions too): the trigger that
# keeps it from usage_metrics must not count the copied rows a second time.
QUIET_TRIGGERS = (("usage_metrics", "usage_metrics_quota"),)
# Read as a constant: SQLite is always instance 0, and no PostgreSQL instance runs these rounds.
CONSTANT = {("round_checkpoints", "instance_id"): "0"}
BATCH_ROWS = 5000  # rows held in memory at once, per COPY


def migrate_to(config: Config, url: str) -> dict[str, int]:
    """Copy every row; the per-table counts, checked equal on both sides before the commit."""
    if not url.startswith(POSTGRES_SCHEMES):
        raise MaintenanceError(f"{label(url)!r} is not a postgresql:// URL")
    if config.is_postgres:
        raise MaintenanceError("DATABASE_URL names PostgreSQL: migrate-to copies from SQLite, "
                               "so point DATABASE_URL (or --env-file) at the SQLite database")
    path = database_file(config)
    require_asyncpg()
    source = open_source(path)
    try:
        version = schema_version(source, path)
        counts = asyncio.run(_copy(source, url))
    finally:
        source.close()
    _report(config, path, url, version, counts)
    return counts


def open_source(path: Path) -> sqlite3.Connection:
    """Read-only, and one read transaction from the first query on: a consistent snapshot
    even if a server still writes (what it writes later is not copied)."""
    conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("BEGIN")
    return conn


def schema_version(source: sqlite3.Connection, path: Path) -> int:
    """The source's schema version, refused unless it is this version's latest: the copy
    maps today's tables, and the source is never written to, so never migrated here."""
    latest = migration_files(SQL_DIR)[-1][0]
    try:
        version = source.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise MaintenanceError(f"{path} is not an aichat database ({e})") from None
    if version is None or version < latest:
        raise MaintenanceError(
            f"{path} is at schema version {version}, this aichat's is {latest}: start this "
            "version of aichat on it once (it applies the migrations at start), stop it, then "
            "run migrate-to again. Nothing was changed.")
    if version > latest:
        raise MaintenanceError(f"{path} is at schema version {version}, newer than this "
                               f"aichat's ({latest}): run migrate-to from that version")
    return int(version)


async def _copy(source: sqlite3.Connection, url: str) -> dict[str, int]:
    try:
        await _check_target(url)  # before anything is created there
        db = await postgres.connect(url, 1)  # creates the schema (or finds it migrated)
        try:
            async with db.pool.acquire() as conn, conn.transaction():
                return await _copy_all(source, conn, url)
        finally:
            await db.close()
    except (OSError, require_asyncpg().PostgresError) as e:
        raise MaintenanceError(f"{label(url)}: {hide(str(e), url)}. No row was copied."
                               ) from None


async def _check_target(url: str) -> None:
    """Refuse, touching nothing, a target that holds aichat rows, tables of that name outside
    an aichat schema, or a running aichat."""
    conn = await connect(url, "migrate-to")
    try:
        await refuse_running(conn, url, "the copy goes into an empty database")
        found = {r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()")}
        if "schema_version" not in found:
            clash = sorted(found & {*TABLES, *CLUSTER_TABLES})
            if clash:
                raise MaintenanceError(
                    f"{label(url)} has tables named {', '.join(clash)} but no aichat schema: "
                    "use an empty database. Nothing was changed.")
            return
        await _refuse_rows(conn, url, [t for t in TABLES if t in found])
    finally:
        await conn.close()


async def _refuse_rows(conn: Any, url: str, tables: list[str]) -> None:
    full = [t for t in tables if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t})")]
    if full:
        raise MaintenanceError(
            f"{label(url)} already holds aichat data (rows in {', '.join(full)}): migrate-to "
            "copies only into an empty database. Nothing was changed.")


async def _copy_all(source: sqlite3.Connection, conn: Any, url: str) -> dict[str, int]:
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", postgres.LOCKS, postgres.WRITES)
    await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE")
    await _refuse_rows(conn, url, list(TABLES))  # again, now that nobody else can write
    counts = {}
    for table, trigger in QUIET_TRIGGERS:  # the ACCESS EXCLUSIVE lock: no one else writes
        await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    for table, order in TABLES.items():
        counts[table] = await _copy_table(source, conn, table, order)
    for table, trigger in QUIET_TRIGGERS:
        await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    await _reset_identities(source, conn)
    for table, copied in counts.items():
        expected = source.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        landed = await conn.fetchval(f"SELECT count(*) FROM {table}")
        if not expected == copied == landed:
            raise MaintenanceError(f"{table}: {expected} rows in SQLite, {copied} read, "
                                   f"{landed} in PostgreSQL; nothing was copied")
    return counts


async def _copy_table(source: sqlite3.Connection, conn: Any, table: str, order: str) -> int:
    """COPY the table in batches of BATCH_ROWS; the number of rows copied."""
    columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
    target = {r[0] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1", table)}
    if missing := [c for c in columns if c not in target]:
        raise MaintenanceError(f"PostgreSQL's {table} has no column {', '.join(missing)}")
    select = ", ".join(CONSTANT.get((table, c), c) for c in columns)
    cursor = source.execute(f"SELECT {select} FROM {table} ORDER BY {order}")
    copied = 0
    asyncpg = require_asyncpg()
    while batch := cursor.fetchmany(BATCH_ROWS):
        try:
            await conn.copy_records_to_table(table, records=batch, columns=columns)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, TypeError) as e:
            # A value PostgreSQL refuses (its type, a NUL in text, a dangling reference).
            raise MaintenanceError(
                f"{table}: a row among {order} {batch[0][0]!r}..{batch[-1][0]!r} cannot be "
                f"copied: {e}. No row was copied.") from None
        copied += len(batch)
    return copied


async def _reset_identities(source: sqlite3.Connection, conn: Any) -> None:
    """Start each identity past the highest id SQLite ever gave (AUTOINCREMENT remembers those
    of deleted rows too): an id a token may still name is never reused."""
    try:
        given = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    except sqlite3.OperationalError:  # no AUTOINCREMENT table ever took a row
        given = {}
    for table, order in TABLES.items():
        if order != "id":
            continue
        top = max(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}"),
                  given.get(table) or 0)
        if top > 0:
            await conn.execute("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)",
                               table, top)


def _report(config: Config, path: Path, url: str, version: int,
            counts: dict[str, int]) -> None:
    print(f"Copied every row of {path} (schema version {version}) into {label(url)}:")
    for table, count in counts.items():
        print(f"  {table:<24} {count:>10}")
    print(f"  {'total':<24} {sum(counts.values()):>10}  (row counts checked on both sides)")
    print("Run aichat on PostgreSQL with the secrets this database was used with:")
    for name, var, configured, why in (
            (ENCRYPTION_KEY_FILE, "ENCRYPTION_KEY", config.encryption_key,
             "the stored model API keys are encrypted with it"),
            (JWT_SECRET_FILE, "JWT_SECRET", config.jwt_secret,
             "with another one everyone signs in again")):
        file = config.data_dir / name
        if configured:
            print(f"  {var}: keep the value this command ran with ({why})")
        elif file.is_file():
            print(f"  {var}: set it to the contents of {file} ({why})")
        else:
            print(f"  {var}: unset, and there is no {file}: {why}")
    print("Keep the SQLite server stopped: what it writes from now on is not in PostgreSQL.")
