"""Upgrading a database of the first release (sql/001 only): every migration runs at start and
every row of every table is still there, with its id and values, and still works."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import aiosqlite
import bcrypt

from aichat.security.crypto import KeyCipher, model_aad
from aichat.store.sqlite import Database, migrate, migration_files

from .helpers import Chat

ENCRYPTION_KEY = "upgrade-test-encryption-key-0123456789"
KEYS = {"system": "sk-system-upgrade-0001", "personal": "sk-bob-upgrade-0002"}
AT = "2025-01-10T08:00:00.000Z"
LATER = "2025-02-01T09:30:00.000Z"

# Every table of sql/001 and the columns it had; ids are given, so they are compared too.
TABLES = {
    "users": "id, username, hashed_password, role, token_version, created_at",
    "model_configs": "id, user_id, name, api_url, api_key, supports_images, created_at",
    "chat_sessions": "id, user_id, model_config_id, title, created_at",
    "messages": "id, session_id, role, content, status, reasoning, created_at",
    "usage_metrics": "id, session_id, message_id, model, provider, prompt_tokens,"
                     " completion_tokens, total_tokens, context_limit, created_at",
    "system_settings": "key, value, created_at, updated_at",
    "user_settings": "user_id, context_token_limit, theme, created_at, updated_at",
}


async def database_at(tmp_path: Path, version: int) -> Path:
    """A database migrated with sql/001..`version` only, as that release left it."""
    sql_dir = tmp_path / f"sql-{version:03d}"
    sql_dir.mkdir()
    for number, path in migration_files():
        if number <= version:
            shutil.copy(path, sql_dir / path.name)
    path = tmp_path / "old" / "app.db"
    path.parent.mkdir()
    conn = await aiosqlite.connect(path, isolation_level=None)
    db = Database(conn, str(path))
    try:
        assert await migrate(db, sql_dir) == list(range(1, version + 1))
    finally:
        await db.close()
    return path


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def fill(path: Path, api_url: str) -> None:
    """A row in every table, as the first release wrote them."""
    hashed = bcrypt.hashpw(b"password1", bcrypt.gensalt(4)).decode()
    cipher = KeyCipher(ENCRYPTION_KEY)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO users (id, username, hashed_password, role, token_version, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(1, "alice", hashed, "ADMIN", 0, AT), (4, "bob", hashed, "USER", 2, LATER)])
        for model_id, owner, name, images, key in ((3, None, "fake-model", 0, KEYS["system"]),
                                                   (7, 4, "bob-model", 1, KEYS["personal"])):
            conn.execute(
                "INSERT INTO model_configs (id, user_id, name, api_url, api_key, supports_images,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model_id, owner, name, api_url, cipher.encrypt(key, model_aad(model_id)),
                 images, AT))
        conn.executemany(
            "INSERT INTO chat_sessions (id, user_id, model_config_id, title, created_at)"
            " VALUES (?, ?, ?, ?, ?)", [(10, 1, 3, "Alice's chat", AT), (11, 4, 7, "Bob's", LATER)])
        conn.executemany(
            "INSERT INTO messages (id, session_id, role, content, status, reasoning, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(20, 10, "user", "Hello?", "complete", None, AT),
             (21, 10, "assistant", "Hi, Alice.", "complete", "She greeted me.", AT),
             (22, 11, "user", "Long question", "complete", None, LATER),
             (23, 11, "assistant", "A partial ans", "stopped", None, LATER),
             (24, 11, "assistant", "", "error", None, LATER)])
        conn.executemany(
            "INSERT INTO usage_metrics (id, session_id, message_id, model, provider,"
            " prompt_tokens, completion_tokens, total_tokens, context_limit, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(30, 10, 21, "fake-model", "127.0.0.1", 12, 4, 16, 4000, AT),
             (31, 11, 23, "bob-model", None, 30, 3, 33, None, LATER),
             (32, 11, None, "bob-model", "127.0.0.1", 5, 0, 5, 8000, LATER)])
        conn.executemany(
            "INSERT INTO system_settings (key, value, created_at, updated_at) VALUES (?, ?, ?, ?)",
            [("registration_enabled", "false", AT, LATER),  # seeded, then an admin's PUT
             ("brand_text", "Family AI", LATER, LATER),
             ("sse_heartbeat_interval_ms", "5000", LATER, LATER)])
        conn.executemany(
            "INSERT INTO user_settings (user_id, context_token_limit, theme, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?)",
            [(1, 8000, "dark", AT, LATER), (4, None, "system", LATER, LATER)])


def snapshot(path: Path) -> dict[str, list[tuple]]:
    return {table: rows(path, f"SELECT {columns} FROM {table} ORDER BY 1")
            for table, columns in TABLES.items()}


async def test_a_first_release_database_upgrades_with_every_row_intact(tmp_path, start, upstream):
    path = await database_at(tmp_path, 1)
    fill(path, upstream.url)
    before = snapshot(path)
    assert all(before.values())

    api = await start(app_mode="multi", database_path=str(path), encryption_key=ENCRYPTION_KEY)
    assert rows(path, "SELECT version FROM schema_version ORDER BY version") == [
        (number,) for number, _ in migration_files()]
    assert snapshot(path) == before
    # What later migrations added: a chat row's user is its session's owner, its status its
    # message's; the old rows count as measured.
    assert rows(path, "SELECT id, user_id, status, estimated FROM usage_metrics ORDER BY id") == [
        (30, 1, "complete", 0), (31, 4, "stopped", 0), (32, 4, None, 0)]
    # Prices came later (sql/010): the old models have none, the old rows no cost.
    assert rows(path, "SELECT id, input_price_micros, output_price_micros FROM model_configs"
                      " ORDER BY id") == [(3, None, None), (7, None, None)]
    assert rows(path, "SELECT id, cost_nanos FROM usage_metrics ORDER BY id") == [
        (30, None), (31, None), (32, None)]

    alice, bob = await api.login("alice", "password1"), await api.login("bob", "password1")
    assert (alice.role, bob.role) == ("ADMIN", "USER")
    messages = await api.ok("GET", "/api/chat/sessions/10/messages", alice)
    assert [(m["id"], m["content"], m["status"]) for m in messages["messages"]] == [
        (20, "Hello?", "complete"), (21, "Hi, Alice.", "complete")]
    assert await api.ok("GET", "/api/settings/personal", alice) == {
        "context_token_limit": 8000, "theme": "dark"}
    system = await api.ok("GET", "/api/settings/system", alice)
    assert (system["brand_text"], system["sse_heartbeat_interval_ms"]) == ("Family AI", 5000)
    assert system["registration_enabled"] is False  # an admin's choice survives the upgrade
    assert system["sources"]["registration_enabled"] == "admin"
    await api.error("POST", "/api/auth/register", None, 403, "Registration is currently disabled",
                    json={"username": "carol", "password": "password1"})
    usage = await api.ok("GET", "/api/chat/usage", bob, params={"sessionId": 11})
    assert usage["totals"] == {"prompt_tokens": 35, "completion_tokens": 3, "total_tokens": 38,
                               "cost": None}

    # Both stored keys still decrypt: each model's round reaches the upstream with its key.
    for user, model_id, session_id, key in ((alice, 3, 10, KEYS["system"]),
                                            (bob, 7, 11, KEYS["personal"])):
        chat = Chat(api, upstream, user, {"id": model_id}, session_id)
        reply = await chat.stream("After the upgrade")
        assert reply.text() == "Hello, world!", reply.events
        assert upstream.requests[-1].headers["Authorization"] == f"Bearer {key}"
    assert rows(path, "SELECT MIN(id) FROM messages WHERE content = 'After the upgrade'") == [
        (25,)]  # new rows follow the old ids
