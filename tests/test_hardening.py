"""Files and addresses a hostile or careless set-up must not expose."""

from __future__ import annotations

import os
import stat

from aichat.store import sqlite as database


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


async def test_a_body_past_the_cap_is_refused_before_it_ends():
    """A chunked body has no Content-Length: the cap applies while it is read, so the server
    never holds more than the route allows (here the body never even ends)."""
    import asyncio
    from unittest import mock

    import pytest
    from aiohttp import StreamReader
    from aiohttp.test_utils import make_mocked_request

    from aichat.http.errors import ApiError
    from aichat.http.validate import read_json

    body = StreamReader(mock.Mock(_reading_paused=False), 2**16,
                        loop=asyncio.get_running_loop())
    request = make_mocked_request("POST", "/api/auth/login", payload=body,
                                  headers={"Transfer-Encoding": "chunked"})
    for _ in range(17):  # 1.06 MiB, and no end of body
        body.feed_data(b"x" * 65536)
    async with asyncio.timeout(5):
        with pytest.raises(ApiError) as refused:
            await read_json(request, 1024 * 1024)
    assert refused.value.status == 413
