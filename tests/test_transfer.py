"""`migrate-to`: an SQLite database the real app wrote moves into PostgreSQL with every row and
id, and an app on PostgreSQL with the same secrets carries on from it (old tokens, encrypted
API keys, fresh ids past every old one); a target with data, an outdated source or a running
instance are refused with nothing changed."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from aichat.app import create_app
from aichat.cli import pgtools, transfer
from aichat.cli.maintenance import MaintenanceError
from aichat.security.crypto import KeyCipher
from aichat.settings.config import Config, env_names
from aichat.store import models
from aichat.store.migrations import POSTGRES_DIR, migration_files

from .conftest import make_config
from .helpers import Api, Chat

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"alice": "sk-alice-MIGRATE-0001", "bob": "sk-bob-MIGRATE-0002",
        "system": "sk-system-MIGRATE-0003"}


@dataclass
class Source:
    """A stopped SQLite app's data: who and what it holds, and its generated secrets."""

    config: Config
    users: dict
    models: dict[str, dict]
    sessions: dict[str, int]
    deleted_user_id: int
    deleted_model_id: int

    @property
    def secret(self) -> dict[str, str]:
        return {name: (self.config.data_dir / name).read_text().strip()
                for name in ("encryption_key", "jwt_secret")}


async def populate(start, upstream) -> Source:
    """Every table gets rows: users, models (personal, system), sessions, messages and usage
    of chat rounds, a /v1 call's usage with its API key, settings, and a checkpoint of a round
    cut off mid-stream. The newest user and model are deleted: their ids must never return."""
    api = await start(app_mode="multi")
    admin = await api.register("admin", "adminpass1")
    alice, bob, carol = [await api.register(n) for n in ("alice", "bob", "carol")]

    def body(key: str, name: str = "fake-model") -> dict:
        return {"name": name, "apiUrl": upstream.url, "apiKey": key}

    made = {"alice": await api.ok("POST", "/api/models", alice, json=body(KEYS["alice"])),
            "bob": await api.ok("POST", "/api/models", bob, json=body(KEYS["bob"])),
            "system": await api.ok("POST", "/api/models/system", admin,
                                   json=body(KEYS["system"], "sys-model"))}
    doomed = await api.ok("POST", "/api/models", bob, json=body("sk-bob-GONE-0009", "gone"))
    await api.ok("DELETE", f"/api/models/{doomed['id']}", bob)
    # Alice's limits: her requests are counted per minute (quota_minutes), and her own limits
    # are columns of users that must come along.
    await api.ok("PUT", f"/api/users/{alice.id}/limits", admin,
                 json={"requestsPerMinute": 100, "tokensPerDay": 10**6, "costPerMonth": 2.5})
    sessions = {}
    for name, user in (("alice", alice), ("bob", bob), ("system", alice)):
        session = await api.ok("POST", "/api/sessions", user,
                               json={"modelConfigId": made[name]["id"], "title": name})
        sessions[name] = session["id"]
        chat = Chat(api, upstream, user, made[name], session["id"])
        assert (await chat.stream(f"hello from {name}")).types()[-1] == "complete"
    key = await api.ok("POST", "/api/keys", alice, json={"name": "sdk"})
    async with api.client.post("/v1/chat/completions", json={
            "model": "fake-model", "messages": [{"role": "user", "content": "via v1"}]},
            headers={"Authorization": f"Bearer {key['key']}"}) as response:
        assert response.status == 200, await response.text()
    await api.ok("PUT", "/api/settings/system", admin, json={"registration_enabled": True})
    await api.ok("PUT", "/api/settings/personal", alice,
                 json={"theme": "dark", "context_token_limit": 4000})
    await api.ok("DELETE", f"/api/users/{carol.id}", admin)
    await api.client.close()  # stopped, as migrate-to asks
    with closing(sqlite3.connect(api.config.database_path)) as conn:  # a round cut off
        asked = conn.execute("SELECT max(id) FROM messages WHERE session_id = ?",
                             (sessions["bob"],)).fetchone()[0] - 1
        conn.execute("INSERT INTO round_checkpoints (session_id, user_message_id, regenerate,"
                     " model, prompt_tokens, context_limit) VALUES (?, ?, 1, 'm', 3, 4000)",
                     (sessions["bob"], asked))
        conn.executemany("INSERT INTO round_checkpoint_parts (session_id, content, reasoning)"
                         " VALUES (?, ?, '')", [(sessions["bob"], f"part {i} ") for i in range(3)])
        conn.commit()
    return Source(api.config, api.users, made, sessions, carol.id, doomed["id"])


def sqlite_rows(config: Config, table: str) -> list[tuple]:
    with closing(sqlite3.connect(config.database_path)) as conn:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        return conn.execute(f"SELECT {', '.join(columns)} FROM {table}"
                            f" ORDER BY {transfer.TABLES[table]}").fetchall()


async def pg_rows(url: str, table: str, columns: list[str]) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {transfer.TABLES[table]}")]
    finally:
        await conn.close()


async def pg_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in sorted(tables)}
    finally:
        await conn.close()


def columns_of(config: Config, table: str) -> list[str]:
    with closing(sqlite3.connect(config.database_path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def run_cli(database_url: str, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    """server.py as an operator runs it, with only the settings given here."""
    env = {k: v for k, v in os.environ.items() if k not in env_names() and k != "PGPASSWORD"}
    env.update({"DATABASE_URL": database_url, **env_extra})
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent",
                           *args], env=env, capture_output=True, text=True, timeout=60)


async def start_on_postgres(aiohttp_client, tmp_path: Path, url: str, secret: dict) -> Api:
    config = make_config(tmp_path, database_path=url, app_mode="multi",
                         encryption_key=secret["encryption_key"],
                         jwt_secret=secret["jwt_secret"])
    return Api(await aiohttp_client(create_app(config)), config)


async def test_every_row_moves_and_the_app_carries_on(start, upstream, pg_url, pg_cluster,
                                                      aiohttp_client, tmp_path, monkeypatch,
                                                      capsys):
    source = await populate(start, upstream)
    expected = {t: sqlite_rows(source.config, t) for t in transfer.TABLES}
    assert all(expected.values()), {t: len(r) for t, r in expected.items()}
    monkeypatch.setattr(transfer, "BATCH_ROWS", 2)  # several batches per table

    counts = await asyncio.to_thread(transfer.migrate_to, source.config, pg_url)

    assert counts == {t: len(rows) for t, rows in expected.items()}
    for table, rows in expected.items():  # every row, every column, the same ids
        assert await pg_rows(pg_url, table, columns_of(source.config, table)) == rows, table
    out = capsys.readouterr().out
    for table, rows in expected.items():
        assert f"  {table:<24} {len(rows):>10}" in out
    secret = source.secret
    assert str(source.config.data_dir / "encryption_key") in out
    assert str(source.config.data_dir / "jwt_secret") in out
    for value in (*secret.values(), pg_cluster.password):
        assert value not in out
    assert (await pg_counts(pg_url))["live_rounds"] == 0

    api = await start_on_postgres(aiohttp_client, tmp_path, pg_url, secret)
    alice = source.users["alice"]
    assert (await api.ok("GET", "/api/auth/me", alice))["username"] == "alice"  # old token
    cipher = KeyCipher(secret["encryption_key"])
    for name, plaintext in KEYS.items():
        row = await models.upstream(api.db, cipher, source.models[name]["id"])
        assert row is not None and row["api_key"] == plaintext
    chat = Chat(api, upstream, alice, source.models["alice"], source.sessions["alice"])
    quota = await api.ok("GET", "/api/quota", alice)
    assert quota["limits"]["tokensPerDay"]["limit"] == 10**6
    assert quota["limits"]["costPerMonth"]["limit"] == 2.5
    used = quota["limits"]["tokensPerMonth"]["used"]
    assert used == sum(r[3] for r in expected["quota_days"] if r[0] == alice.id) > 0
    assert (await chat.stream("again, on PostgreSQL")).types()[-1] == "complete"
    # The copy counted each row once, and the counting trigger works again after it.
    [(newest_total,)] = await api.rows("SELECT total_tokens FROM usage_metrics"
                                       " ORDER BY id DESC LIMIT 1")
    quota = await api.ok("GET", "/api/quota", alice)
    assert quota["limits"]["tokensPerMonth"]["used"] == used + newest_total
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {KEYS['alice']}"
    assert [m["content"] for m in await chat.messages()][:2] == ["hello from alice",
                                                                "Hello, world!"]
    # New rows take ids past every id SQLite ever gave, deleted rows' included.
    dave = await api.register("dave")
    assert dave.id == source.deleted_user_id + 1
    model = await api.ok("POST", "/api/models", alice, json={
        "name": "new", "apiUrl": upstream.url, "apiKey": "sk-new-0000"})
    assert model["id"] == source.deleted_model_id + 1
    newest = max(r[0] for r in expected["messages"])
    assert len(await api.rows("SELECT id FROM messages WHERE id > ? AND session_id = ?",
                              (newest, chat.session_id))) == 2  # no collision with old ids
    # The checkpoint came along: the start on PostgreSQL recovered the cut-off round.
    bob = Chat(api, upstream, source.users["bob"], source.models["bob"], source.sessions["bob"])
    assert [(m["content"], m["status"]) for m in await bob.messages()] == [
        ("hello from bob", "complete"), ("part 0 part 1 part 2", "interrupted")]


async def test_the_command_line_and_a_target_with_data(start, upstream, pg_url, pg_cluster):
    """`server.py migrate-to URL` (`aichat migrate-to URL` is the same main); a second run finds
    the data there and changes nothing. The output holds no secret."""
    source = await populate(start, upstream)
    # The password through PGPASSWORD, as the help advises: it stays out of `ps`.
    result = run_cli(source.config.database_path, "migrate-to",
                     pgtools.split_password(pg_url)[0], PGPASSWORD=pg_cluster.password)
    assert result.returncode == 0, result.stderr
    assert "Copied every row" in result.stdout and "set it to the contents of" in result.stdout
    before = await pg_counts(pg_url)
    assert before["users"] == 3 and before["messages"] == 6

    again = run_cli(source.config.database_path, "migrate-to", pg_url)
    assert again.returncode == 1
    assert "already holds aichat data (rows in users, model_configs" in again.stderr
    assert "Nothing was changed" in again.stderr
    assert await pg_counts(pg_url) == before
    for value in (*source.secret.values(), pg_cluster.password):
        assert value not in result.stdout + result.stderr + again.stdout + again.stderr


async def test_a_migrated_but_empty_target_is_fine_but_not_while_aichat_runs_on_it(
        start, upstream, pg_url, aiohttp_client, tmp_path):
    source = await populate(start, upstream)
    api = await start_on_postgres(aiohttp_client, tmp_path, pg_url, source.secret)
    with pytest.raises(MaintenanceError, match="aichat is running on .*stop every instance"):
        await asyncio.to_thread(transfer.migrate_to, source.config, pg_url)
    await api.client.close()
    counts = await asyncio.to_thread(transfer.migrate_to, source.config, pg_url)
    assert counts["users"] == 3


async def test_a_foreign_database_is_refused_untouched(start, upstream, pg_url):
    source = await populate(start, upstream)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE users (id int, name text)")
    finally:
        await conn.close()
    with pytest.raises(MaintenanceError, match="tables named users but no aichat schema"):
        await asyncio.to_thread(transfer.migrate_to, source.config, pg_url)
    assert await pg_counts(pg_url) == {"users": 0}


async def test_an_outdated_source_is_refused_and_not_written(tmp_path, pg_url):
    """A database of an older aichat (sql/001..008): migrate-to never migrates the source."""
    path = tmp_path / "old" / "app.db"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, applied_at TEXT)")
        for version, file in transfer.migration_files(transfer.SQL_DIR)[:8]:
            conn.executescript(file.read_text())
            conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)",
                         (version, file.name))
        conn.commit()
    before = path.read_bytes()
    result = run_cli(str(path), "migrate-to", pg_url)
    assert result.returncode == 1
    latest = len(transfer.migration_files(transfer.SQL_DIR))
    assert (f"schema version 8, this aichat's is {latest}: start this version of aichat on it"
            in result.stderr)
    assert path.read_bytes() == before
    assert await pg_counts(pg_url) == {}  # not even the schema was created


async def test_a_value_postgresql_refuses_rolls_the_whole_copy_back(start, upstream, pg_url):
    source = await populate(start, upstream)
    with closing(sqlite3.connect(source.config.database_path)) as conn:
        conn.execute("UPDATE messages SET content = ? WHERE id = 2", ("a\x00b",))
        conn.commit()
    with pytest.raises(MaintenanceError, match=r"messages: a row among id 1\.\.6 .*No row"):
        await asyncio.to_thread(transfer.migrate_to, source.config, pg_url)
    counts = await pg_counts(pg_url)
    schema = len(migration_files(POSTGRES_DIR))
    assert counts["schema_version"] == schema and counts["users"] == 0  # schema only


async def test_wrong_source_or_target(tmp_path, pg_url):
    on_postgres = make_config(tmp_path, database_path=pg_url)
    with pytest.raises(MaintenanceError, match="migrate-to copies from SQLite"):
        transfer.migrate_to(on_postgres, pg_url)
    with pytest.raises(MaintenanceError, match="is not a postgresql:// URL"):
        transfer.migrate_to(make_config(tmp_path), "mysql://x@y/z")
    with pytest.raises(MaintenanceError, match="no database at"):
        transfer.migrate_to(make_config(tmp_path), pg_url)
