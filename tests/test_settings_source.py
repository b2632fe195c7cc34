"""Where each run-time setting comes from (default, env, admin), PUT null returning a value to
the environment or default, and APP_MODE switches behaving as a fresh start in the new mode."""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing

import pytest

from aichat.app import create_app
from aichat.settings import table
from aichat.settings.config import Config

from .helpers import Api
from .test_upgrade import database_at, rows

BOB = {"username": "bob", "password": "password1"}


def test_from_env_remembers_which_fields_it_read():
    config = Config.from_env({"BACKEND_PORT": "9000", "SSE_HEARTBEAT_INTERVAL_MS": "2000",
                              "USAGE_EMIT": "", "APP_MODE": "single"})
    assert config.env_fields == {"port", "sse_heartbeat_interval_ms", "app_mode"}
    assert Config().env_fields == frozenset()
    assert config == Config(port=9000, sse_heartbeat_interval_ms=2000)  # values alone compare


async def test_sources_name_default_env_and_admin(start):
    api = await start(app_mode="multi", sse_heartbeat_interval_ms=2000, usage_emit=False,
                      env_fields=frozenset({"sse_heartbeat_interval_ms", "usage_emit"}))
    admin = await api.register("admin", "adminpass1")
    data = await api.ok("GET", "/api/settings/system", admin)
    assert data["sources"] == {row.key: "default" for row in table.RUNTIME} | {
        "sse_heartbeat_interval_ms": "env", "usage_emit": "env"}
    assert (data["sse_heartbeat_interval_ms"], data["usage_emit"]) == (2000, False)

    data = await api.ok("PUT", "/api/settings/system", admin,
                        json={"brand_text": "Family AI", "sse_heartbeat_interval_ms": 3000})
    assert data["sources"]["brand_text"] == data["sources"]["sse_heartbeat_interval_ms"] == "admin"
    assert data["sources"]["usage_emit"] == "env"
    assert data["sources"]["max_reply_chars"] == "default"
    assert await api.ok("GET", "/api/settings/system", admin) == data


async def test_an_unusable_stored_value_is_not_an_admin_value(api):
    with closing(sqlite3.connect(api.config.database_path)) as conn, conn:
        conn.execute("INSERT INTO system_settings (key, value) VALUES ('max_reply_chars', 'x')")
    data = await api.ok("GET", "/api/settings/system", "admin")
    assert data["max_reply_chars"] == table.BY_KEY["max_reply_chars"].default
    assert data["sources"]["max_reply_chars"] == "default"


async def test_put_null_returns_a_value_to_its_env_or_default(start):
    api = await start(app_mode="multi", sse_heartbeat_interval_ms=2000,
                      env_fields=frozenset({"sse_heartbeat_interval_ms"}))
    admin = await api.register("admin", "adminpass1")
    await api.ok("PUT", "/api/settings/system", admin, json={
        "sse_heartbeat_interval_ms": 5000, "brand_text": "Family AI", "usage_emit": False,
        "registration_enabled": False})
    data = await api.ok("PUT", "/api/settings/system", admin, json={
        "sse_heartbeat_interval_ms": None, "brand_text": None, "registration_enabled": None,
        "max_models_per_user": None, "sources": None, "whatever": None})
    assert (data["sse_heartbeat_interval_ms"], data["brand_text"]) == (2000, "AIChat")
    assert data["registration_enabled"] is True  # multi mode's default
    assert data["usage_emit"] is False  # absent: left as it was
    assert data["sources"] == {row.key: "default" for row in table.RUNTIME} | {
        "sse_heartbeat_interval_ms": "env", "usage_emit": "admin"}
    assert await api.ok("GET", "/api/settings/system", admin) == data
    assert rows(api.config.database_path, "SELECT key FROM system_settings") == [("usage_emit",)]
    await api.register("bob")


async def test_put_null_beside_a_bad_value_writes_nothing(api):
    await api.ok("PUT", "/api/settings/system", "admin", json={"brand_text": "Family AI"})
    await api.error("PUT", "/api/settings/system", "admin", 400,
                    "provider_timeout_ms must be an integer from 10000 to 3600000",
                    json={"brand_text": None, "provider_timeout_ms": 5})
    data = await api.ok("GET", "/api/settings/system", "admin")
    assert (data["brand_text"], data["sources"]["brand_text"]) == ("Family AI", "admin")


async def restart(api: Api, aiohttp_client, **changes) -> Api:
    """The same data folder started again with some settings changed."""
    config = dataclasses.replace(api.config, **changes)
    return Api(await aiohttp_client(create_app(config)), config)


async def test_single_then_multi_lets_people_register(start, aiohttp_client):
    single = await start(app_mode="single")
    await single.register("owner", "ownerpass1")
    await single.error("POST", "/api/auth/register", None, 403, "single user mode", json=BOB)
    data = await single.ok("GET", "/api/settings/system", "owner")
    assert data["registration_enabled"] is False
    assert data["sources"]["registration_enabled"] == "default"
    assert rows(single.config.database_path, "SELECT * FROM system_settings") == []

    multi = await restart(single, aiohttp_client, app_mode="multi")
    assert (await multi.register("bob")).role == "USER"
    owner = await multi.login("owner", "ownerpass1")
    data = await multi.ok("GET", "/api/settings/system", owner)
    assert data["registration_enabled"] is True
    assert data["sources"]["registration_enabled"] == "default"


@pytest.mark.parametrize("first_mode", ["single", "multi"])
async def test_an_admin_who_closed_registration_keeps_it_closed(start, aiohttp_client,
                                                                first_mode):
    api = await start(app_mode=first_mode)
    admin = await api.register("admin", "adminpass1")
    await api.ok("PUT", "/api/settings/system", admin, json={"registration_enabled": False})
    for _ in range(2):  # restarted twice, in multi mode
        api = await restart(api, aiohttp_client, app_mode="multi")
        await api.error("POST", "/api/auth/register", None, 403,
                        "Registration is currently disabled", json=BOB)
        admin = await api.login("admin", "adminpass1")
        data = await api.ok("GET", "/api/settings/system", admin)
        assert data["registration_enabled"] is False
        assert data["sources"]["registration_enabled"] == "admin"


def seeded(path, value: str, updated_at: str) -> None:
    """registration_enabled as an older release's start stored it, maybe then PUT by an admin
    (which moved updated_at)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO system_settings (key, value, created_at, updated_at)"
                     " VALUES ('registration_enabled', ?, '2025-01-10T08:00:00.000Z', ?)",
                     (value, updated_at))


@pytest.mark.parametrize("mode, value, updated_at, registration", [
    ("multi", "false", "2025-01-10T08:00:00.000Z", True),  # single mode's seed, now multi
    ("single", "true", "2025-01-10T08:00:00.000Z", False),  # multi mode's seed, now single
    ("multi", "false", "2025-01-10T08:00:00.001Z", False),  # an admin closed it
    ("multi", "true", "2025-03-01T00:00:00.000Z", True),  # an admin opened it
])
async def test_the_upgrade_forgets_seeded_registration_but_not_an_admins(
        tmp_path, start, mode, value, updated_at, registration):
    path = await database_at(tmp_path, 7)
    seeded(path, value, updated_at)
    api = await start(app_mode=mode, database_path=str(path))
    admin = await api.register("admin", "adminpass1")
    data = await api.ok("GET", "/api/settings/system", admin)
    assert data["registration_enabled"] is registration
    by_admin = updated_at != "2025-01-10T08:00:00.000Z"
    assert data["sources"]["registration_enabled"] == ("admin" if by_admin else "default")
    assert len(rows(path, "SELECT * FROM system_settings")) == by_admin
    if mode == "multi":
        status, _ = await api.call("POST", "/api/auth/register", json=BOB)
        assert status == (200 if registration else 403)
