"""PostgreSQL fixtures: one throwaway cluster per test run, one empty database per test.

The cluster fixture is synchronous (session-scoped async fixtures fight pytest-aiohttp's
per-test loop); the per-test database is created and dropped on the test's own loop
(setup.cfg: asyncio_mode = auto, so a plain @pytest.fixture async generator is enough).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

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
    cluster = Cluster(bindir)
    cluster.start()  # initdb + start: ~1.2 s measured (up to 2.3 s on a busy machine)
    try:
        yield cluster
    finally:
        cluster.stop()


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
