"""PostgreSQL fixtures: one throwaway cluster per test run, one empty database per test.

The cluster fixture is synchronous (session-scoped async fixtures fight pytest-aiohttp's
per-test loop); the per-test database is created and dropped on the test's own loop
(setup.cfg: asyncio_mode = auto, so a plain @pytest.fixture async generator is enough).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from .pg_cluster import Cluster, find_bindir

NOT_FOUND = ("PostgreSQL binaries not found; install postgresql"
             " (Debian: apt-get install postgresql)")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """Skipped without PostgreSQL, unless AICHAT_TEST_POSTGRES=required (CI) makes it fail."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("AICHAT_TEST_POSTGRES") == "required":
            pytest.fail(NOT_FOUND, pytrace=False)
        pytest.skip(NOT_FOUND)
    cluster = Cluster(bindir, base_dir=_fast_dir())
    cluster.start()  # initdb + start: ~1.2 s measured (up to 2.3 s on a busy machine)
    try:
        yield cluster
    finally:
        cluster.stop()


def _fast_dir() -> str:
    """/dev/shm when it has room: CREATE DATABASE copies files, ~20 ms in RAM against
    0.1-0.35 s on disk, for every PostgreSQL test. Docker's default 64 MB /dev/shm has not."""
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        return "/tmp"
    return "/dev/shm" if usage.free > 2 * 1024**3 else "/tmp"


TEMPLATE = "aichat_template"
_template_ready: set[str] = set()


async def _migrated_template(cluster: Cluster) -> str:
    """A database with aichat's PostgreSQL schema, made once per run: apps' databases are
    copied from it instead of each running the migrations at its start."""
    if cluster.admin_url not in _template_ready:
        from aichat.store.migrations import POSTGRES_DIR, migration_files
        from aichat.store.postgres import migrate
        await cluster.create_database(TEMPLATE)
        conn = await asyncpg.connect(cluster.url(TEMPLATE))
        try:
            await migrate(conn, migration_files(POSTGRES_DIR))
        finally:
            await conn.close()
        _template_ready.add(cluster.admin_url)
    return TEMPLATE


@pytest.fixture
async def pg_app_url(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A fresh database that already has aichat's schema (for apps under test); its URL."""
    name = f"t_{secrets.token_hex(8)}"
    await pg_cluster.create_database(name, template=await _migrated_template(pg_cluster))
    try:
        yield pg_cluster.url(name)
    finally:
        await pg_cluster.drop_database(name)


@pytest.fixture
async def pg_url(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A fresh, empty database for one test; its URL."""
    # Measured (PostgreSQL 15, dev VM, /tmp on ext4): create + drop 0.1-0.35 s, almost all of
    # it CREATE DATABASE copying template1 (~20 ms with base_dir=/dev/shm); connecting ~15 ms,
    # DROP ~10 ms.
    name = f"t_{secrets.token_hex(8)}"
    await pg_cluster.create_database(name)
    try:
        yield pg_cluster.url(name)
    finally:
        await pg_cluster.drop_database(name)
