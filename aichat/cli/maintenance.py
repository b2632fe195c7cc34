"""Operator commands run from `server.py`: `rotate-key` and `backup`.

Plain sqlite3, no event loop: these are one-shot CLI commands. `backup` works while the server
runs (WAL readers never block the writer); `rotate-key` needs the server stopped, since a
running server would keep encrypting and decrypting with the old key. With PostgreSQL both
hand over to cli/pgtools.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from aichat.store import audit, models
from aichat.store.dialect import postgres as postgres_sql
from aichat.app import ENCRYPTION_KEY_FILE, JWT_SECRET_FILE
from aichat.settings.config import Config, ConfigError
from aichat.security.crypto import DecryptError, KeyCipher, model_aad
from aichat.security import secrets_file
from aichat.security.secrets_file import MIN_SECRET_CHARS

NEW_SUFFIX = ".new"
BUSY_TIMEOUT_MS = 5000


class MaintenanceError(RuntimeError):
    """The command refused or failed; nothing was changed unless the message says so."""


# --- rotate-key ---

def rotate_key(config: Config, new_key: str | None) -> str:
    """Re-encrypt every stored model API key under `new_key` (generated if None) in one
    transaction and return the new key.

    Old key: ENCRYPTION_KEY if configured, else the data folder's key file. In the file case
    the new key goes to `encryption_key.new` (fsynced) before the commit and is renamed over
    `encryption_key` after it, so a crash at any point leaves a state `_leftover` can name.
    No copy of a value under the old key survives in the file: a VACUUM first drops the
    values of since-deleted or changed keys, then secure_delete zeroes what the update frees.
    """
    if config.is_postgres:
        from aichat.cli import pgtools
        rotated = pgtools.rotate_key(config, new_key)
        # After pgtools' own commit (its transaction is not reachable from here).
        _audit_postgres(config, "rotate_key", ENCRYPTION_KEY_FILE, {"keySource": "environment"},
                        "the key was rotated")
        return rotated
    db_path = database_file(config)
    key_file = config.data_dir / ENCRYPTION_KEY_FILE
    new_file = key_file.with_name(ENCRYPTION_KEY_FILE + NEW_SUFFIX)
    from_env = config.encryption_key is not None
    if from_env and new_key is None:
        raise ConfigError(NEW_KEY_REQUIRED)
    old_key, old_label = _old_key(config, key_file)
    new_key = checked_new_key(old_key, secrets_file.generate() if new_key is None else new_key)
    old, new = KeyCipher(old_key), KeyCipher(new_key)

    conn = _connect(db_path)
    try:
        if new_file.exists():
            raise MaintenanceError(_leftover(conn, new_file, old_key, old_label))
        _reencrypted(conn, old, new, old_label)  # refuse before touching anything
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA synchronous = FULL")  # the commit is on disk before the rename
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            updates = _reencrypted(conn, old, new, old_label)
            models.replace_keys(conn, updates)
            # In the same commit: the event and the rotation are both there or neither.
            audit.add_sqlite(conn, audit.SYSTEM, "rotate_key", ENCRYPTION_KEY_FILE,
                             {"keysReencrypted": len(updates),
                              "keySource": "environment" if from_env else "file"})
            if not from_env:
                _write_secret(new_file, new_key)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not from_env:
                new_file.unlink(missing_ok=True)
            raise
        if not from_env:
            os.replace(new_file, key_file)
            _fsync_dir(key_file.parent)
        # Old page images leave the main file (closing checkpoints too, should this fail).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as e:
        raise MaintenanceError(f"{db_path}: {e}") from None
    finally:
        conn.close()

    print(f"Re-encrypted {len(updates)} stored API key(s) under a new encryption key.")
    if not from_env:
        print(f"The new key replaced {key_file}; the old key no longer decrypts anything.")
    else:
        print("Set ENCRYPTION_KEY to the key given with --new-key before starting the server: "
              "the old key no longer decrypts anything.")
    return new_key


# A generated key shown only after the commit could be lost to a closed pipe or a `| head`, and
# every stored provider key with it: with ENCRYPTION_KEY set, the operator brings the new key.
NEW_KEY_REQUIRED = ("ENCRYPTION_KEY comes from the environment, so the new key cannot be "
                    "stored for you: give it with --new-key (or NEW_ENCRYPTION_KEY), then set "
                    "ENCRYPTION_KEY to it")


def checked_new_key(old_key: str, new_key: str) -> str:
    new_key = new_key.strip()
    if len(new_key) < MIN_SECRET_CHARS:
        raise ConfigError(f"--new-key is too short: use at least {MIN_SECRET_CHARS} characters")
    if new_key == old_key:
        raise ConfigError("--new-key is the current key")
    return new_key


def _old_key(config: Config, key_file: Path) -> tuple[str, str]:
    if config.encryption_key is not None:
        return config.encryption_key, "ENCRYPTION_KEY (from the environment)"
    try:
        value = key_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise MaintenanceError(f"no encryption key: ENCRYPTION_KEY is unset and {key_file} "
                               "does not exist") from None
    if len(value) < MIN_SECRET_CHARS:
        raise MaintenanceError(f"{key_file} holds no usable key")
    return value, str(key_file)


def _reencrypted(conn: sqlite3.Connection, old: KeyCipher, new: KeyCipher,
                 old_label: str) -> list[tuple[str, int]]:
    return reencrypted(models.stored_keys(conn), old, new, old_label)


def reencrypted(rows: list[tuple[int, str]], old: KeyCipher, new: KeyCipher,
                old_label: str) -> list[tuple[str, int]]:
    """(new value, id) for each (id, stored value); MaintenanceError if any fails to decrypt."""
    updates, failed = [], []
    for model_id, stored in rows:
        aad = model_aad(model_id)
        try:
            updates.append((new.encrypt(old.decrypt(stored, aad), aad), model_id))
        except DecryptError:
            failed.append(model_id)
    if failed:
        ids = ", ".join(map(str, failed[:20])) + (", ..." if len(failed) > 20 else "")
        raise MaintenanceError(
            f"{len(failed)} of {len(rows)} stored API keys do not decrypt with {old_label} "
            f"(model ids {ids}); nothing was changed. Run with the key they were stored "
            "under, or re-enter or delete those models' keys first.")
    return updates


def _leftover(conn: sqlite3.Connection, new_file: Path, old_key: str, old_label: str) -> str:
    """Why `encryption_key.new` is there and what to do: a run stopped before or after its
    commit; whichever key decrypts the stored values tells which."""
    head = f"{new_file} exists: a previous rotate-key did not finish."
    key_file = new_file.with_name(ENCRYPTION_KEY_FILE)
    rows = models.stored_keys(conn)
    pending = new_file.read_text(encoding="ascii", errors="replace").strip()
    if not rows:
        return (f"{head} No API key is stored, so either key works: delete {new_file.name}, "
                "then run rotate-key again.")
    if _decrypts_all(pending, rows):
        return (f"{head} It was committed: the stored keys decrypt with {new_file.name}. "
                f"Finish it with `mv {new_file} {key_file}` (nothing else to do).")
    if _decrypts_all(old_key, rows):
        return (f"{head} It was not committed: the stored keys still decrypt with "
                f"{old_label}. Delete {new_file}, then run rotate-key again.")
    return (f"{head} The stored keys decrypt with neither it nor {old_label}: find the key "
            f"they were stored under, keep it as {key_file} and delete {new_file.name}.")


def _decrypts_all(key: str, rows: list[tuple[int, str]]) -> bool:
    if len(key) < MIN_SECRET_CHARS:
        return False
    cipher = KeyCipher(key)
    try:
        for model_id, stored in rows:
            cipher.decrypt(stored, model_aad(model_id))
    except DecryptError:
        return False
    return True


# --- backup ---

def backup(config: Config, path: str) -> None:
    """Write a consistent copy of the live database to `path` (a new file, mode 0600) with
    VACUUM INTO: a snapshot read in one transaction, safe while the server writes."""
    if config.is_postgres:
        from aichat.cli import pgtools
        pgtools.backup(config, path)
        _audit_postgres(config, "backup", "database",
                        {"path": str(Path(path).expanduser().resolve())},
                        f"the backup was written to {path}")
        return None
    db_path = database_file(config)
    target = create_new_file(path)  # VACUUM INTO accepts an empty file
    try:
        conn = _connect(db_path)
        try:
            conn.execute("VACUUM INTO ?", (str(target),))
            # A backup nobody can see in the audit log is not kept: a failure here removes it.
            audit.add_sqlite(conn, audit.SYSTEM, "backup", "database", {"path": str(target)})
        finally:
            conn.close()
        fsync_file(target)
    except sqlite3.Error as e:
        target.unlink(missing_ok=True)
        raise MaintenanceError(f"backup of {db_path} failed: {e}") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise

    print(f"Wrote a consistent copy of {db_path} to {target} ({target.stat().st_size} bytes).")
    print_secrets_note(config)


def print_secrets_note(config: Config) -> None:
    kept = [f"{var} (set in the environment)" if configured else str(config.data_dir / name)
            for name, var, configured in (
                (ENCRYPTION_KEY_FILE, "ENCRYPTION_KEY", config.encryption_key),
                (JWT_SECRET_FILE, "JWT_SECRET", config.jwt_secret))]
    print(f"The secrets are not in it: back up {kept[0]} and {kept[1]} too. Without the "
          "encryption key the model API keys in the backup cannot be decrypted.")


# --- shared ---

def _audit_postgres(config: Config, action: str, target: str, detail: dict[str, Any],
                    done: str) -> None:
    """The command's event on PostgreSQL (actor `system`, no address), in its own commit."""
    from aichat.cli import pgtools

    async def add() -> None:
        conn = await pgtools.connect(config.database_path, "audit")
        try:
            if await conn.fetchval("SELECT to_regclass('audit_log')") is None:
                return  # a database not yet migrated by this version's server
            if action == "rotate_key":  # rotate-key re-encrypts every row
                detail["keysReencrypted"] = await conn.fetchval(
                    "SELECT count(*) FROM model_configs")
            await conn.execute(postgres_sql(audit.INSERT),
                               *audit.values(audit.SYSTEM, action, target, detail))
        finally:
            await conn.close()

    try:
        asyncio.run(add())
    except MaintenanceError as e:
        raise MaintenanceError(f"{done}, but its audit event was not stored: {e}") from None
    except Exception as e:  # asyncpg's errors: said with the URL's password hidden
        raise MaintenanceError(f"{done}, but its audit event was not stored: "
                               f"{pgtools.hide(str(e), config.database_path)}") from None


def create_new_file(path: str) -> Path:
    """Create `path` empty, owner-only (0600), refusing an existing file: a backup never
    replaces anything, and creating it ourselves makes it ours and private."""
    target = Path(path).expanduser().resolve()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MaintenanceError(f"{target} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise MaintenanceError(f"cannot create {target}: {e.strerror}") from None
    os.close(fd)
    return target


def database_file(config: Config) -> Path:
    if config.database_path == ":memory:":
        raise MaintenanceError("DATABASE_URL is :memory:, there is no database file")
    path = Path(config.database_path).expanduser().resolve()
    if not path.is_file():
        raise MaintenanceError(f"no database at {path} (DATABASE_URL)")
    return path


def _connect(path: Path) -> sqlite3.Connection:
    """An existing database only (mode=rw never creates one), in autocommit mode."""
    conn = sqlite3.connect(path.as_uri() + "?mode=rw", uri=True, isolation_level=None,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
