"""Files and addresses a hostile or careless set-up must not expose."""

from __future__ import annotations

import os
import stat

from aichat.store import db as database


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_files_are_owner_only_in_an_existing_open_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        db = await database.connect(str(folder / "app.db"))
        try:
            async with db.transaction() as tx:  # a write, so the -wal file holds data
                await tx.execute("INSERT INTO users (username, hashed_password) VALUES ('a', 'x')")
            names = sorted(p.name for p in folder.iterdir())
            assert {"app.db", "app.db-wal", "app.db-shm"} <= set(names)
            assert {name: mode(folder / name) for name in names} == dict.fromkeys(names, 0o600)
        finally:
            await db.close()
    finally:
        os.umask(old)


async def test_database_files_left_world_readable_are_narrowed_at_start(tmp_path):
    path = tmp_path / "app.db"
    db = await database.connect(str(path))
    await db.close()
    path.chmod(0o644)
    db = await database.connect(str(path))
    try:
        assert mode(path) == 0o600
        assert await db.value("SELECT COUNT(*) FROM schema_version") > 0  # same database
    finally:
        await db.close()
