"""Middlewares, CORS, body limits, configuration, server start-up, secrets and migrations."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from aichat.app import create_app
from aichat.settings.config import Config, ConfigError, env_names, load, read_dotenv
from aichat.http.errors import ApiError
from aichat.http.middlewares import error_middleware
from aichat.security import secrets_file
from aichat.security.crypto import DecryptError, KeyCipher, model_aad
from aichat.store import sqlite as database

from .helpers import assert_error

ROOT = Path(__file__).resolve().parent.parent


# --- the error middleware alone, on a bare application ---

async def test_error_middleware_shapes_every_failure(aiohttp_client, caplog):
    async def boom(request):
        raise RuntimeError("secret detail")

    async def refused(request):
        raise ApiError(429, "slow down", {"Retry-After": "7"})

    async def fine(request):
        return web.json_response({"ok": 1})

    app = web.Application(middlewares=[error_middleware], client_max_size=10)
    app.router.add_get("/boom", boom)
    app.router.add_get("/refused", refused)
    app.router.add_post("/fine", fine)

    async def body_reader(request):
        await request.read()
        return web.json_response({})
    app.router.add_post("/read", body_reader)
    client = await aiohttp_client(app)

    with caplog.at_level(logging.ERROR):
        resp = await client.get("/boom")
        assert_error(resp.status, await resp.json(), 500, "Internal server error")
    assert "secret detail" not in await resp.text()
    assert any("secret detail" in r.exc_text for r in caplog.records if r.exc_text)

    resp = await client.get("/refused")
    assert_error(resp.status, await resp.json(), 429, "slow down")
    assert resp.headers["Retry-After"] == "7"
    resp = await client.get("/missing")
    assert_error(resp.status, await resp.json(), 404, "Route GET /missing not found")
    resp = await client.get("/fine")
    assert_error(resp.status, await resp.json(), 405)
    assert resp.headers["Allow"] == "POST"
    resp = await client.post("/read", data=b"x" * 100)
    assert_error(resp.status, await resp.json(), 413, "too large")


async def test_json_routes_cap_bodies_at_1_mib(api):
    big = b'{"username": "' + b"a" * (1024 * 1024) + b'"}'
    await api.error("POST", "/api/auth/login", None, 413, "too large", data=big)


async def test_unknown_route_is_404_even_without_a_token(api):
    await api.error("GET", "/api/nothing/here", None, 404, "Route GET /api/nothing/here not found")
    await api.error("PATCH", "/api/auth/me", None, 405)


# --- CORS ---

async def test_cors_wildcard(start):
    api = await start()
    resp = await api.client.options("/api/auth/login", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type, Authorization"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    resp = await api.client.get("/api/auth/me", headers={"Origin": "http://app.example"})
    assert resp.status == 401  # errors carry CORS headers too
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_origin_list_echoes_listed_origins_only(start):
    api = await start(cors_origin="http://a.example, http://b.example")
    resp = await api.client.get("/api/health", headers={"Origin": "http://b.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "http://b.example"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in resp.headers.getall("Vary")
    resp = await api.client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await api.client.options("/api/health", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert_error(resp.status, await resp.json(), 403)


async def test_cors_disabled(start):
    api = await start(enable_cors=False)
    resp = await api.client.get("/api/health", headers={"Origin": "http://a.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await api.client.options("/api/health", headers={
        "Origin": "http://a.example", "Access-Control-Request-Method": "GET"})
    assert resp.status == 405


# --- configuration ---

def test_config_defaults_match_the_contract():
    config = Config.from_env({})
    assert (config.port, config.host, config.app_mode) == (8001, "0.0.0.0", "single")
    assert config.database_path == "./data/app.db" and config.jwt_secret is None
    assert config.enable_cors is True and config.cors_origin == "*"
    assert config.default_context_token_limit == 4000 and config.tokenizer_mode == "precise"
    assert (config.sse_heartbeat_interval_ms, config.provider_max_idle_ms,
            config.provider_timeout_ms) == (15000, 60000, 300000)
    assert config.usage_emit is True and config.usage_provider_only is False
    assert config.bcrypt_rounds == 12 and config.log_level == "info"


def test_config_parses_env():
    config = Config.from_env({"BACKEND_PORT": "9000", "DATABASE_URL": "file:/tmp/x/app.db",
                              "ENABLE_CORS": "TRUE", "USAGE_EMIT": "false",
                              "APP_MODE": "MULTI", "HOSTNAME": "my-laptop"})
    assert config.port == 9000 and config.database_path == "/tmp/x/app.db"
    assert config.enable_cors is True and config.usage_emit is False
    assert config.app_mode == "multi" and config.host == "0.0.0.0"  # HOSTNAME is not read
    assert Config.from_env({"PORT": "1234", "BACKEND_PORT": "9000"}).port == 1234


@pytest.mark.parametrize("env, name", [
    ({"PORT": "abc"}, "PORT"), ({"PORT": "70000"}, "PORT"), ({"PORT": "-1"}, "PORT"),
    ({"APP_MODE": "foo"}, "APP_MODE"),
    ({"ENABLE_CORS": "maybe"}, "ENABLE_CORS"), ({"JWT_SECRET": "short"}, "JWT_SECRET"),
    ({"TOKENIZER_MODE": "exact"}, "TOKENIZER_MODE"), ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"), ({"BCRYPT_ROUNDS": "3"}, "BCRYPT_ROUNDS"),
])
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Config.from_env(env)


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nPORT=9100\nexport APP_MODE='multi'\nCORS_ORIGIN=\"http://x\"\n")
    assert read_dotenv(dotenv) == {"PORT": "9100", "APP_MODE": "multi", "CORS_ORIGIN": "http://x"}
    config = load({"PORT": "9200"}, dotenv)
    assert config.port == 9200 and config.app_mode == "multi" and config.cors_origin == "http://x"


def test_env_example_lists_every_setting():
    example = (ROOT / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip()
                  for line in example.splitlines() if "=" in line}
    assert set(env_names()) <= documented
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in env_names())


def _run_server(env_extra: dict, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in env_names()}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "--env-file", "/nonexistent",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("env, name", [({"PORT": "abc"}, "PORT"),
                                       ({"APP_MODE": "foo"}, "APP_MODE")])
def test_server_refuses_bad_settings_with_exit_2(env, name):
    result = _run_server(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]


def test_server_help_lists_every_setting_with_its_default():
    result = _run_server({}, "--help")
    assert result.returncode == 0
    for name in env_names():
        assert name in result.stdout
    assert "8001" in result.stdout and "15000" in result.stdout


def test_server_refuses_an_invalid_default_admin(tmp_path):
    result = _run_server({"DATABASE_URL": str(tmp_path / "app.db"),
                          "DEFAULT_ADMIN_USERNAME": "admin", "DEFAULT_ADMIN_PASSWORD": "admin",
                          "BCRYPT_ROUNDS": "4", "PORT": "0"})
    assert result.returncode == 2
    assert "DEFAULT_ADMIN_PASSWORD" in result.stderr


async def test_default_admin_is_created_once_from_env(start):
    api = await start(default_admin_username="boss", default_admin_password="bosspass1")
    boss = await api.login("boss", "bosspass1")
    assert boss.role == "ADMIN"


# --- secrets ---

def test_generated_secrets_are_0600_and_reused(tmp_path):
    first = secrets_file.load_or_create(tmp_path, "jwt_secret", None)
    path = tmp_path / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43
    assert secrets_file.load_or_create(tmp_path, "jwt_secret", None) == first
    assert secrets_file.load_or_create(tmp_path, "jwt_secret", "x" * 40) == "x" * 40
    assert secrets_file.load_or_create(tmp_path, "other", None) != first


async def test_app_start_creates_both_secret_files_and_tokens_survive_restart(start,
                                                                              aiohttp_client):
    api = await start()
    user = await api.register("owner", "ownerpass1")
    data_dir = Path(api.config.database_path).parent
    for name in ("jwt_secret", "encryption_key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    client = await aiohttp_client(create_app(api.config))
    async with client.get("/api/auth/me", headers=user.headers) as resp:
        assert resp.status == 200


async def test_configured_secret_is_used_and_not_written(start):
    api = await start(jwt_secret="j" * 40, encryption_key="e" * 40)
    await api.register("owner", "ownerpass1")
    data_dir = Path(api.config.database_path).parent
    assert not (data_dir / "jwt_secret").exists() and not (data_dir / "encryption_key").exists()


def test_key_cipher_round_trip_nonce_and_binding():
    cipher = KeyCipher("a-secret-that-is-long-enough-for-aes-use")
    one, two = cipher.encrypt("sk-abc", model_aad(1)), cipher.encrypt("sk-abc", model_aad(1))
    assert one.startswith("v1:") and one != two  # fresh nonce per value
    assert cipher.decrypt(one, model_aad(1)) == "sk-abc"
    with pytest.raises(DecryptError):
        cipher.decrypt(one, model_aad(2))  # moved to another row
    with pytest.raises(DecryptError):
        KeyCipher("another-secret-that-is-long-enough-too").decrypt(one, model_aad(1))
    tampered = one[:-4] + ("AAAA" if one[-4:] != "AAAA" else "BBBB")
    for bad in (tampered, "v1:!!!", "v1:" + "A" * 8, "plain-key", "v2:abcd"):
        with pytest.raises(DecryptError):
            cipher.decrypt(bad, model_aad(1))


# --- migrations ---

@pytest.fixture
async def closing():
    """Databases opened by a test are closed even when it fails (their threads block exit)."""
    opened = []
    yield opened.append
    for db in opened:
        await db.close()


async def test_migrations_apply_once_and_are_recorded(tmp_path, closing):
    path = str(tmp_path / "m.db")
    db = await database.connect(path)
    closing(db)
    versions = [row["version"] for row in await db.all("SELECT version FROM schema_version")]
    assert versions == [v for v, _ in database.migration_files()]
    assert await database.migrate(db) == []
    assert await db.value("PRAGMA journal_mode") == "wal"
    assert await db.value("PRAGMA foreign_keys") == 1


async def test_a_failing_migration_rolls_back_and_stops_start(tmp_path, closing):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_ok.sql").write_text("CREATE TABLE a (id INTEGER PRIMARY KEY);\n")
    (sql_dir / "002_bad.sql").write_text(
        "CREATE TABLE b (id INTEGER);\nINSERT INTO nope VALUES (1);\n")
    import aiosqlite
    conn = await aiosqlite.connect(str(tmp_path / "f.db"), isolation_level=None)
    conn.row_factory = database._dict_row
    db = database.Database(conn, str(tmp_path / "f.db"))
    closing(db)
    with pytest.raises(sqlite3.OperationalError):
        await database.migrate(db, sql_dir)
    tables = {r["name"] for r in await db.all("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables
    assert await db.value("SELECT MAX(version) FROM schema_version WHERE name = '001_ok.sql'") == 1


def test_split_statements_keeps_triggers_whole():
    script = ("-- c\nCREATE TABLE t (x);\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
              "  UPDATE t SET x = 1;\nEND;\n")
    assert len(database.split_statements(script)) == 2
    with pytest.raises(ValueError):
        database.split_statements("CREATE TABLE t (x)")
