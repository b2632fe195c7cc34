"""Upgrading to one usage table (sql/006): every row of usage_metrics and api_usage survives,
with its user, session and key, and the usage endpoints report what they did before."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import aiosqlite
import bcrypt
import pytest

from aichat.store.sqlite import Database, migrate, migration_files

# (session, message, model, provider, prompt, completion, total, context_limit, estimated, at)
CHAT_ROWS = [
    ("a1", "r1", "m", "h1", 10, 5, 15, 4000, 0, "2025-01-10T08:00:00.000Z"),
    ("a1", None, "m", "h1", 7, 0, 7, 4000, 1, "2025-01-10T09:00:00.000Z"),
    ("a2", "r2", "m", None, 20, 10, 30, None, 0, "2025-01-11T10:00:00.000Z"),
    ("b1", "r3", "m", "h2", 1, 2, 3, 2000, 0, "2025-01-11T11:00:00.000Z"),
]
# (user, key, model, provider, status, prompt, completion, total, estimated, at)
API_ROWS = [
    ("alice", "k1", "m", "h1", "complete", 100, 50, 150, 0, "2025-01-10T12:00:00.000Z"),
    ("alice", None, "m", "h1", "error", 3, 0, 3, 1, "2025-01-10T13:00:00.000Z"),
    ("alice", "k2", "other", "h3", "stopped", 8, 4, 12, 0, "2025-01-11T14:00:00.000Z"),
    ("bob", "kb", "m", "h1", "complete", 9, 9, 18, 0, "2025-01-11T15:00:00.000Z"),
]
RANGE = {"from": "2025-01-01", "to": "2025-01-31"}


def sums(prompt: int, completion: int, total: int) -> dict[str, int | None]:
    """A usage endpoint's sum; rows from before prices (sql/010) have no cost."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
            "cost": None}


async def old_database(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A database migrated up to 005, holding rows in both old usage tables; the ids by name."""
    up_to_5 = tmp_path / "sql-005"
    up_to_5.mkdir()
    for version, path in migration_files():
        if version <= 5:
            shutil.copy(path, up_to_5 / path.name)
    path = tmp_path / "old" / "app.db"
    path.parent.mkdir()
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    db = Database(conn, str(path))
    ids: dict[str, int] = {}
    try:
        assert await migrate(db, up_to_5) == [1, 2, 3, 4, 5]
        async with db.transaction() as tx:
            await fill(tx, ids)
    finally:
        await db.close()
    return path, ids


async def fill(tx, ids: dict[str, int]) -> None:
    hashed = bcrypt.hashpw(b"password1", bcrypt.gensalt(4)).decode()
    for user, role in (("alice", "ADMIN"), ("bob", "USER")):
        ids[user] = await tx.insert("INSERT INTO users (username, hashed_password, role)"
                                    " VALUES (?, ?, ?)", (user, hashed, role))
    model = await tx.insert("INSERT INTO model_configs (user_id, name, api_url, api_key)"
                            " VALUES (NULL, 'm', 'https://x.test/v1', 'v1:x')")
    for name, user in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        ids[name] = await tx.insert("INSERT INTO chat_sessions (user_id, model_config_id,"
                                    " title) VALUES (?, ?, ?)", (ids[user], model, name))
    for name, session, status in (("r1", "a1", "complete"), ("r2", "a2", "stopped"),
                                  ("r3", "b1", "interrupted")):
        ids[name] = await tx.insert("INSERT INTO messages (session_id, role, content, status)"
                                    " VALUES (?, 'assistant', 'reply', ?)",
                                    (ids[session], status))
    for name, user in (("k1", "alice"), ("k2", "alice"), ("kb", "bob")):
        ids[name] = await tx.insert("INSERT INTO api_keys (user_id, name, prefix, key_hash)"
                                    " VALUES (?, ?, 'aic_', ?)", (ids[user], name, name))
    for session, message, *numbers in CHAT_ROWS:
        await tx.insert(
            "INSERT INTO usage_metrics (session_id, message_id, model, provider, prompt_tokens,"
            " completion_tokens, total_tokens, context_limit, estimated, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (ids[session], ids.get(message), *numbers))
    for user, key, *numbers in API_ROWS:
        await tx.insert(
            "INSERT INTO api_usage (user_id, api_key_id, model, provider, status, prompt_tokens,"
            " completion_tokens, total_tokens, estimated, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (ids[user], ids.get(key), *numbers))


def expected_rows(ids: dict[str, int]) -> list[tuple]:
    """(user, session, message, key, model, provider, status, prompt, completion, total,
    context_limit, estimated, created_at) of every old row, chat rows first."""
    owner = {"a1": "alice", "a2": "alice", "b1": "bob"}
    status = {"r1": "complete", "r2": "stopped", "r3": "interrupted"}
    chat = [(ids[owner[s]], ids[s], ids.get(m), None, model, provider, status.get(m), p, c, t,
             limit, est, at) for s, m, model, provider, p, c, t, limit, est, at in CHAT_ROWS]
    api = [(ids[u], None, None, ids.get(k), model, provider, st, p, c, t, None, est, at)
           for u, k, model, provider, st, p, c, t, est, at in API_ROWS]
    return chat + api


COLUMNS = ("user_id, session_id, message_id, api_key_id, model, provider, status, prompt_tokens,"
           " completion_tokens, total_tokens, context_limit, estimated, created_at")


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


async def test_every_usage_row_survives_the_upgrade(tmp_path, start):
    path, ids = await old_database(tmp_path)
    api = await start(app_mode="multi", database_path=str(path))
    assert rows(path, f"SELECT {COLUMNS} FROM usage_metrics ORDER BY id") == expected_rows(ids)
    assert rows(path, "SELECT DISTINCT cost_nanos FROM usage_metrics") == [(None,)]
    tables = {name for (name,) in rows(path, "SELECT name FROM sqlite_master")}
    assert "api_usage" not in tables and "usage_new" not in tables
    plan = rows(path, "EXPLAIN QUERY PLAN SELECT SUM(total_tokens) FROM usage_metrics"
                      " WHERE user_id = ? AND created_at BETWEEN ? AND ?", (1, "a", "b"))
    assert "usage_metrics_user_created" in str(plan)

    alice = await api.login("alice", "password1")
    # The chat endpoints count chat rounds only, /api/keys/usage the /v1 requests only.
    totals = await api.ok("GET", "/api/chat/usage", alice, params={"sessionId": ids["a1"]})
    assert totals["totals"] == sums(17, 5, 22)
    assert totals["last_round"]["createdAt"] == "2025-01-10T09:00:00.000Z"
    assert await api.ok("GET", "/api/chat/sessions/usage", alice) == [
        {"sessionId": ids["a2"], "totals": sums(20, 10, 30)},
        {"sessionId": ids["a1"], "totals": sums(17, 5, 22)}]
    daily = await api.ok("GET", "/api/chat/usage/daily", alice, params=RANGE)
    assert daily["rows"] == [{"date": "2025-01-10", **sums(17, 5, 22)},
                             {"date": "2025-01-11", **sums(20, 10, 30)}]
    keys = await api.ok("GET", "/api/keys/usage", alice, params=RANGE)
    assert keys["rows"] == [
        {"date": "2025-01-10", "model": "m", "requests": 2, **sums(103, 50, 153)},
        {"date": "2025-01-11", "model": "other", "requests": 1, **sums(8, 4, 12)}]


async def test_the_upgraded_table_keeps_the_cascades(tmp_path, start):
    path, ids = await old_database(tmp_path)
    api = await start(app_mode="multi", database_path=str(path))
    alice = await api.login("alice", "password1")
    await api.ok("DELETE", f"/api/keys/{ids['k1']}", alice)  # the row stays, keyless
    assert rows(path, "SELECT api_key_id FROM usage_metrics WHERE prompt_tokens = 100") == [
        (None,)]
    await api.ok("DELETE", f"/api/sessions/{ids['a2']}/messages", alice)  # rows stay, unlinked
    assert rows(path, "SELECT message_id FROM usage_metrics WHERE session_id = ?",
                (ids["a2"],)) == [(None,)]
    await api.ok("DELETE", f"/api/sessions/{ids['a1']}", alice)  # its rows go with it
    assert rows(path, "SELECT COUNT(*) FROM usage_metrics WHERE session_id = ?",
                (ids["a1"],)) == [(0,)]
    await api.ok("DELETE", f"/api/users/{ids['bob']}", alice)  # chat and /v1 rows alike
    assert rows(path, "SELECT COUNT(*) FROM usage_metrics WHERE user_id = ?",
                (ids["bob"],)) == [(0,)]
    assert len(rows(path, "SELECT id FROM usage_metrics")) == 4


async def test_a_chat_row_takes_its_user_from_its_session(tmp_path, start):
    path, ids = await old_database(tmp_path)
    await start(app_mode="multi", database_path=str(path))
    with closing(sqlite3.connect(path)) as conn, conn:
        row_id = conn.execute("INSERT INTO usage_metrics (session_id, model) VALUES (?, 'm')",
                              (ids["b1"],)).lastrowid
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("INSERT INTO usage_metrics (model) VALUES ('m')")
    assert row_id == len(CHAT_ROWS) + len(API_ROWS) + 1
    assert rows(path, "SELECT user_id FROM usage_metrics WHERE id = ?", (row_id,)) == [
        (ids["bob"],)]


async def test_the_quota_counts_start_from_the_existing_rows(tmp_path, start):
    """sql/011 fills quota_days from the rows already stored: a limit set after the upgrade
    counts what was used before it (docs/api.md §9)."""
    path, ids = await old_database(tmp_path)
    await start(app_mode="multi", database_path=str(path))
    counted = rows(path, "SELECT user_id, day, api_key_id, tokens, cost_nanos FROM quota_days"
                         " ORDER BY user_id, day, api_key_id")
    alice, bob = ids["alice"], ids["bob"]
    assert counted == sorted([
        (alice, "2025-01-10", 0, 15 + 7 + 3, 0), (alice, "2025-01-10", ids["k1"], 150, 0),
        (alice, "2025-01-11", 0, 30, 0), (alice, "2025-01-11", ids["k2"], 12, 0),
        (bob, "2025-01-11", 0, 3, 0), (bob, "2025-01-11", ids["kb"], 18, 0)])
