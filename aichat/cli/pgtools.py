"""`backup` and `rotate-key` on PostgreSQL, and the connection helpers `migrate-to` shares.

The database password never reaches a command line (`ps`, logs) or a message: pg_dump gets it
through PGPASSWORD, and every error text passes through `hide`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from aichat.cli.maintenance import (NEW_KEY_REQUIRED, MaintenanceError, checked_new_key,
                                    create_new_file, fsync_file, print_secrets_note,
                                    reencrypted)
from aichat.security.crypto import KeyCipher
from aichat.settings.config import Config, ConfigError, redact
from aichat.store import postgres

VERSIONED_BINDIRS = "/usr/lib/postgresql/*/bin"  # Debian/Ubuntu keep them off PATH
CLIENT_PACKAGE = ("install the PostgreSQL client tools of the server's major version or newer "
                  "(Debian/Ubuntu: apt-get install postgresql-client{version}; Alpine: apk add "
                  "postgresql-client; macOS: brew install libpq)")
# Connections of running instances: the store's pool and the coordination connection.
RUNNING = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
           " AND pid <> pg_backend_pid()"
           " AND (application_name = 'aichat' OR application_name LIKE 'aichat-%')")
STOP_WAIT_S = 2.0  # an instance stopped just now may take a moment to leave pg_stat_activity


# --- URLs and secrets ---

def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None), parsed as asyncpg does: from
    `user:password@` or a `password=` query parameter. Everything else stays as written."""
    parts = urlsplit(url)
    auth, at, hosts = parts.netloc.partition("@")
    password, netloc = None, parts.netloc
    if at and ":" in auth:
        user, _, raw = auth.partition(":")
        password, netloc = unquote(raw), f"{user}@{hosts}"
    kept, given = _query_without_password(parts.query)
    password = password or given
    return urlunsplit(parts._replace(netloc=netloc, query=kept)), password


def _query_without_password(query: str) -> tuple[str, str | None]:
    """The query string without its `password=` items (the others verbatim: libpq does not
    read `+` as a space, so nothing is re-encoded), and the password given there."""
    kept, password = [], None
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "password":
            password = unquote(value)
        else:
            kept.append(item)
    return "&".join(kept), password


def label(url: str) -> str:
    """The URL fit for a message: its password masked, in the user part or the query."""
    parts = urlsplit(redact(url))
    kept, given = _query_without_password(parts.query)
    query = "&".join(q for q in (kept, "password=***" if given is not None else "") if q)
    return urlunsplit(parts._replace(query=query))


def hide(text: str, url: str) -> str:
    """`text` (an error, a tool's output) with the URL's password masked wherever it shows."""
    text = redact(text)
    parts = urlsplit(url)
    auth, at, _ = parts.netloc.partition("@")
    raw = auth.partition(":")[2] if at else ""
    secrets = {raw, unquote(raw), _query_without_password(parts.query)[1] or ""}
    for secret in secrets:
        if len(secret) >= 4:  # a shorter one would mask ordinary words
            text = text.replace(secret, "***")
    return text


def require_asyncpg() -> Any:
    """The driver module, or MaintenanceError saying how to install it."""
    if postgres.asyncpg is None:
        raise MaintenanceError("asyncpg is not installed: pip install 'aichat[postgres]'")
    return postgres.asyncpg


async def connect(url: str, purpose: str) -> Any:
    """One asyncpg connection named `aichat <purpose>` (not a running instance's name)."""
    asyncpg = require_asyncpg()
    try:
        return await asyncpg.connect(url, server_settings={"application_name": f"aichat {purpose}"})
    except Exception as e:  # any failure to open it: name the server, never the password
        raise MaintenanceError(f"cannot connect to PostgreSQL at {label(url)}: "
                               f"{hide(str(e), url)}") from None


async def refuse_running(conn: Any, url: str, why: str) -> None:
    """MaintenanceError while an aichat instance is connected to the database."""
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
    while count := await conn.fetchval(RUNNING):
        if asyncio.get_running_loop().time() >= deadline:
            raise MaintenanceError(
                f"aichat is running on {label(url)} ({count} open connection(s) named aichat): "
                f"stop every instance first ({why}). Nothing was changed.")
        await asyncio.sleep(0.1)


# --- backup ---

def backup(config: Config, path: str) -> None:
    """pg_dump's custom archive of the database (consistent: one snapshot; safe while the
    servers run), restorable with pg_restore. Rows of the unlogged coordination tables (the
    state of running processes) are left out."""
    url = config.database_path
    pg_dump = find_program("pg_dump")
    if pg_dump is None:
        raise MaintenanceError(
            "pg_dump was not found (on PATH, in `pg_config --bindir` or "
            f"{VERSIONED_BINDIRS}): {CLIENT_PACKAGE.format(version='')}, then run backup again")
    bare, password = split_password(url)
    env = dict(os.environ, PGAPPNAME="aichat backup")
    if password is not None:
        env["PGPASSWORD"] = password  # never on the command line
    target = create_new_file(path)  # pg_dump writes into it, keeping its 0600
    try:
        done = _run(str(pg_dump), "--format=custom", "--no-unlogged-table-data",
                    "--no-password", f"--file={target}", f"--dbname={bare}", env=env)
        if done.returncode != 0:
            raise MaintenanceError(_dump_failed(pg_dump, done, url))
        fsync_file(target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    print(f"Wrote a pg_dump custom archive of {label(url)} to {target} "
          f"({target.stat().st_size} bytes, {_version(pg_dump)}).")
    print(f"Restore it into an empty database with: pg_restore -d <url> {target}")
    print_secrets_note(config)


def find_program(name: str) -> Path | None:
    """A PostgreSQL client program: on PATH, else in `pg_config --bindir`, else in the
    newest of Debian's versioned folders."""
    return next((p for p in _candidates(name) if p.is_file() and os.access(p, os.X_OK)), None)


def _candidates(name: str) -> Iterator[Path]:
    if found := shutil.which(name):
        yield Path(found)
    if pg_config := shutil.which("pg_config"):
        out = _run(pg_config, "--bindir")
        if out.returncode == 0 and out.stdout.strip():
            yield Path(out.stdout.strip()) / name
    for folder in sorted(glob.glob(VERSIONED_BINDIRS), key=_version_key, reverse=True):
        yield Path(folder) / name


def _version_key(folder: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): numeric, so 10 sorts after 9."""
    return tuple(int(p) for p in Path(folder).parent.name.split(".") if p.isdigit())


def _version(program: Path) -> str:
    return _run(str(program), "--version").stdout.strip() or program.name


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL client program we located, with an argument list (no shell) and no
    terminal to prompt on."""
    return subprocess.run(args, env=env, capture_output=True, text=True,  # noqa: S603
                          stdin=subprocess.DEVNULL, check=False)


def _dump_failed(pg_dump: Path, done: subprocess.CompletedProcess[str], url: str) -> str:
    """pg_dump's own words, and what to do when it is older than the server."""
    said = hide(done.stderr.strip(), url) or "(no message)"
    message = f"{pg_dump} failed (exit {done.returncode}), nothing was written:\n{said}"
    if "version mismatch" in done.stderr:
        server = re.search(r"server version: (\d+)", done.stderr)
        message += (f"\n{_version(pg_dump)} is older than the server: "
                    + CLIENT_PACKAGE.format(version=f"-{server.group(1)}" if server else ""))
    return message


# --- rotate-key ---

def rotate_key(config: Config, new_key: str | None) -> str:
    """Re-encrypt every stored model API key under `new_key`, in one transaction. The key
    always comes from the environment with PostgreSQL (every instance must share it), so the
    operator brings the new one and sets ENCRYPTION_KEY to it on every instance."""
    old_key = config.encryption_key
    if old_key is None:
        raise ConfigError("ENCRYPTION_KEY is not set: with PostgreSQL the key comes from the "
                          "environment; set it to the key the stored API keys are encrypted "
                          "with, then run rotate-key again")
    if new_key is None:
        raise ConfigError(NEW_KEY_REQUIRED)
    new_key = checked_new_key(old_key, new_key)
    require_asyncpg()
    count, compacted = asyncio.run(
        _rotate(config.database_path, KeyCipher(old_key), KeyCipher(new_key)))
    print(f"Re-encrypted {count} stored API key(s) under a new encryption key.")
    if not compacted:
        print("Could not VACUUM FULL model_configs (not its owner?): the old values stay in "
              "its files until PostgreSQL reuses the space.")
    print("Set ENCRYPTION_KEY to the key given with --new-key on every instance before "
          "starting them: the old key no longer decrypts anything.")
    return new_key


async def _rotate(url: str, old: KeyCipher, new: KeyCipher) -> tuple[int, bool]:
    asyncpg = require_asyncpg()
    conn = await connect(url, "rotate-key")
    try:
        await refuse_running(conn, url, "they keep using the key they started with")
        try:
            async with conn.transaction():
                # Serialised with the store's transactions; no model row changes meanwhile.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)",
                                   postgres.LOCKS, postgres.WRITES)
                await conn.execute("LOCK TABLE model_configs IN SHARE ROW EXCLUSIVE MODE")
                rows = [(r["id"], r["api_key"]) for r in
                        await conn.fetch("SELECT id, api_key FROM model_configs ORDER BY id")]
                updates = reencrypted(rows, old, new, "ENCRYPTION_KEY (from the environment)")
                await conn.executemany("UPDATE model_configs SET api_key = $1 WHERE id = $2",
                                       updates)
        except asyncpg.PostgresError as e:
            raise MaintenanceError(f"{label(url)}: {hide(str(e), url)}; "
                                   "nothing was changed") from None
        return len(updates), await _compact(conn)
    finally:
        await conn.close()


async def _compact(conn: Any) -> bool:
    """Rewrite the table so the old values' dead row versions leave its files now."""
    try:
        await conn.execute("VACUUM FULL model_configs")
    except require_asyncpg().PostgresError:
        return False
    return True
