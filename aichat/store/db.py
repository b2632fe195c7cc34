"""The store's entry point: the interface every store module uses, and `connect`, which picks
the backend DATABASE_URL names (SQLite by default: store/sqlite.py; PostgreSQL: store/postgres.py).
"""

from __future__ import annotations

from aichat.settings.config import Config
from aichat.store.base import Database, Reader, Transaction, Unavailable, found, inserted_id

__all__ = ["Database", "Reader", "Transaction", "Unavailable", "connect", "found",
           "inserted_id"]


async def connect(config: Config) -> Database:
    """Open and migrate the configured database."""
    if config.is_postgres:
        from aichat.store import postgres  # asyncpg is an optional extra
        return await postgres.connect(config.database_path, config.database_pool_size)
    from aichat.store import sqlite
    return await sqlite.connect(config.database_path)
