"""The throwaway PostgreSQL cluster (tests/pg_cluster.py): per-test databases work, are
independent and are dropped afterwards; clients can reconnect after a restart."""

from __future__ import annotations

import asyncpg
import pytest

from .pg_cluster import Cluster

SEEN: list[str] = []  # database names earlier runs of test_databases_are_independent got


async def test_round_trip(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO notes (body) VALUES ($1)", "héllo")
        assert await conn.fetch("SELECT id, body FROM notes") == [(1, "héllo")]
    finally:
        await conn.close()


@pytest.mark.parametrize("run", [1, 2])
async def test_databases_are_independent(pg_url: str, run: int) -> None:
    """Each run creates the same table and finds it empty (a shared database would fail the
    second CREATE), and the earlier run's database is gone."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE shared (n int)")
        assert await conn.fetchval("SELECT count(*) FROM shared") == 0
        await conn.execute("INSERT INTO shared VALUES ($1)", run)
        name = await conn.fetchval("SELECT current_database()")
        existing = {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()
    assert name not in SEEN
    assert not existing.intersection(SEEN), "an earlier test's database was not dropped"
    SEEN.append(name)


async def test_reconnect_after_restart(pg_cluster: Cluster, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    pg_cluster.restart()  # blocks the loop for ~1 s; nothing else runs on it meanwhile
    with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError)):
        await conn.fetchval("SELECT 1")
    await conn.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT n FROM kept") == 7
    finally:
        await conn.close()
